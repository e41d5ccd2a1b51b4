"""What leaves the office for the field: plant counts and sprayer prescriptions, made
from a finished run's files.

May import the base modules, :mod:`agriseg.io` and :mod:`agriseg.health`
(``tests/test_imports.py``).
"""
