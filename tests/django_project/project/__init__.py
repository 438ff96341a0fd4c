"""The Django project that tests pgrouter.django (tests/integration/test_django.py)."""
