"""Teachers (frozen foundation models) and students (timm architectures).

Every module of this package is imported here, so a new packaged teacher is one new file with a
``@TEACHERS.register(name)`` builder.
"""

import importlib
import pkgutil

from reprodistill.models.student import Student, create_student
from reprodistill.models.teacher import TEACHERS, Teacher, TimmTeacher
from reprodistill.models.teacher_factory import create_teacher

for _module in pkgutil.iter_modules(__path__):  # registration side effects: importing a teacher file registers it
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TEACHERS", "Student", "Teacher", "TimmTeacher", "create_student", "create_teacher"]
