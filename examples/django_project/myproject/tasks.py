"""The units: `difo server --setup myproject.worker:setup --import myproject.tasks`.

They use the ORM and Django's mail like any view; the setup hook has called django.setup().
"""

from django.core.mail import send_mail
from django.utils import timezone

import difo

from .models import Signup


@difo.job(retry=5)
def send_welcome(signup_id: int) -> None:
    """Mail the welcome once: a unit may run twice, so it records that it ran."""
    signup = Signup.objects.get(pk=signup_id)
    if signup.welcomed_at is not None:
        return
    send_mail("Welcome", f"Welcome aboard, {signup.email}!", None, [signup.email])
    signup.welcomed_at = timezone.now()
    signup.save(update_fields=["welcomed_at"])
