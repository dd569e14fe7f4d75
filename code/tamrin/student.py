"""The student's and course's details for the cover page and the submission zip's name."""
from __future__ import annotations

from dataclasses import dataclass

from .schema import field_

# Keys the zip needs before it may be handed in (the cover page shows placeholders without them).
REQUIRED_FOR_ZIP = ("first_name_fa", "last_name_fa", "last_name_en", "student_number")


@dataclass
class StudentConfig:
    first_name_fa: str = field_("", "student's first name in Persian (cover page)")
    last_name_fa: str = field_("", "student's last name in Persian (cover page)")
    first_name_en: str = field_("", "student's first name in Latin letters")
    last_name_en: str = field_("", "student's last name in Latin letters (zip file name)")
    student_number: str = field_("", "student number (cover page, zip file name)")
    course_fa: str = field_("مدل‌های مولد عمیق", "course title in Persian")
    course_en: str = field_("Deep Generative Models", "course title in English")
    instructor_fa: str = field_("دکتر مصطفی توسلی‌پور", "instructor in Persian")
    university_fa: str = field_("دانشگاه تهران", "university in Persian")
    faculty_fa: str = field_("پردیس دانشکده‌های فنی — دانشکدهٔ مهندسی برق و کامپیوتر", "campus and faculty in Persian")
    semester_fa: str = field_("نیم‌سال اول ۱۴۰۵–۱۴۰۶", "semester in Persian")
    assignment_number: int = field_(4, "assignment number shown on the cover", min=1)

    def missing_for_zip(self) -> list[str]:
        """The `student.*` keys that are still empty and that the zip stage requires."""
        return [f"student.{k}" for k in REQUIRED_FOR_ZIP if not str(getattr(self, k)).strip()]
