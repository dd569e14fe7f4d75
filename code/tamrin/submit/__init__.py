"""Submission: the zip the course asks for, and a Colab/Kaggle notebook."""
