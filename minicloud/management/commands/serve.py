"""Set up and serve minicloud: migrate, make sure an admin exists, run the server."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = (
        "Apply migrations, create an 'admin' superuser with a generated password if there is "
        "no superuser yet, and serve minicloud with Django's development server."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "addrport",
            nargs="?",
            default="127.0.0.1:8000",
            help="Address and port to listen on (default: 127.0.0.1:8000).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=1)
        self.ensure_admin()
        self.stdout.write(f"minicloud: http://{options['addrport']}/  admin: /admin/")
        # No autoreloader: one process owns the embedded database and stops it on exit.
        call_command("runserver", options["addrport"], use_reloader=False)

    def ensure_admin(self) -> None:
        User = get_user_model()
        admin = User.objects.filter(is_superuser=True).order_by("pk").first()
        if admin is not None:
            self.stdout.write(
                f"Admin account: {admin.get_username()!r} (change its password with "
                f"'python manage.py changepassword {admin.get_username()}')."
            )
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", email="", password=password)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created the admin account: username 'admin', password {password!r} "
                "(shown only this once)."
            )
        )
