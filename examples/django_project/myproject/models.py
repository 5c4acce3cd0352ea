"""One model: a signup, and when its welcome mail went out."""

from django.db import models


class Signup(models.Model):
    email = models.EmailField()
    welcomed_at = models.DateTimeField(null=True, blank=True)
