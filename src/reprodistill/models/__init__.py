"""Teachers (frozen foundation models) and students (timm architectures)."""

from reprodistill.models.student import Student, create_student
from reprodistill.models.teacher import TEACHERS, Teacher, TimmTeacher
from reprodistill.models.teacher_factory import create_teacher

__all__ = ["TEACHERS", "Student", "Teacher", "TimmTeacher", "create_student", "create_teacher"]
