"""Flow matching (assignment question 2): sympy-checked derivations and the I-CFM vs OT-CFM experiment."""
