"""POST /signup/: store a signup, and enqueue its welcome mail once the row is committed."""

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from .models import Signup
from .tasks import send_welcome


@require_POST
def signup(request: HttpRequest) -> JsonResponse:
    email = request.POST.get("email", "")
    if not email:
        return JsonResponse({"error": "email is required"}, status=400)
    with transaction.atomic():
        created = Signup.objects.create(email=email)
        # Not send_welcome.perform() here: a server may run the unit before this transaction
        # commits (and find no row), or the transaction may roll back after the unit is sent.
        transaction.on_commit(lambda: send_welcome.perform(created.pk))
    return JsonResponse({"id": created.pk}, status=201)
