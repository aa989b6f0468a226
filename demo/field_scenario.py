"""The field scenario, end to end, on embedded SQLite.

Three research assistants enter a household survey on their own laptops. Two sync
at midday; the third stays offline all day. Everyone keeps working (new visits,
corrections, a deleted form), then all three sync in the evening, and the
evening sync is repeated, as happens when a link drops and someone presses the
button again. At the end the server must hold exactly the union of the laptops'
data: same rows per model, same content checksum, nothing twice.
"""
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from syncrouter.models import IncomingTransaction, OutgoingTransaction  # noqa: E402
from syncrouter.registry import site_sync_models  # noqa: E402
from tests import checksum, factories  # noqa: E402
from tests.testapp.models import CrfOne, HouseholdMember, SubjectVisit  # noqa: E402

LAPTOPS = settings.LAPTOPS
totals = {alias: Counter() for alias in LAPTOPS}


def say(text=""):
    print(text, flush=True)


def fresh_databases():
    shutil.rmtree(settings.DATA, ignore_errors=True)
    settings.DATA.mkdir(parents=True)
    for alias in LAPTOPS + ["server"]:
        call_command("migrate", database=alias, verbosity=0)
        factories.load_symptoms(alias)


def morning(alias, prefix):
    """Enumerate two households, their members, a first visit and its CRF."""
    factories.study(alias, households=2, members=3, visits=1, prefix=prefix)


def afternoon(alias, prefix):
    """Follow-up visits, a correction, a deleted form, an M2M change."""
    for hm in HouseholdMember.objects.using(alias).all():
        factories.crf(alias, factories.visit(alias, hm, "2000"))
    member = HouseholdMember.objects.using(alias).order_by("subject_identifier").first()
    member.first_name = "Corrected"
    member.save()
    wrong = CrfOne.objects.using(alias).filter(subject_visit__visit_code="2000").first()
    wrong.symptoms.clear()
    wrong.delete()
    SubjectVisit.objects.using(alias).filter(pk=wrong.subject_visit_id).delete()
    crf = CrfOne.objects.using(alias).order_by("report_datetime").first()
    crf.weight_kg = crf.weight_kg + 1
    crf.save()


def sync(alias):
    result = OutgoingTransaction.objects.using(alias).filter(
        is_consumed_server=False).copy_to_incoming_transaction("server")
    totals[alias]["copied"] += result.copied
    totals[alias]["already on server"] += result.already_present
    # One process holds every node here, so check_hostname=False (see README).
    messages = IncomingTransaction.objects.using("server").filter(
        is_consumed=False).deserialize(check_hostname=False)
    for message in messages:
        laptop = message.producer.removeprefix("field-")
        totals[laptop][message.outcome] += 1
    say(f"  {alias}: copied {result.copied}, already on server {result.already_present}, "
        f"replayed {len(messages)} ({', '.join(f'{k} {v}' for k, v in sorted(Counter(m.outcome for m in messages).items())) or 'nothing new'})")


def report():
    say("\nPer producer")
    columns = {"captured": "captured", "copied": "copied", "already on server": "again",
               "inserted": "inserted", "updated": "updated", "deleted": "deleted",
               "deferred": "deferred", "error": "error"}
    say(f"  {'producer':<16}" + "".join(f"{c:>10}" for c in columns.values()))
    for alias in LAPTOPS:
        totals[alias]["captured"] = OutgoingTransaction.objects.using(alias).count()
        say(f"  {'field-' + alias:<16}" + "".join(f"{totals[alias][c]:>10}" for c in columns))
    say("\nServer against the union of the laptops (rows, content checksum)")
    ok = True
    for model in site_sync_models:
        union = sorted(r for alias in LAPTOPS for r in checksum.rows(model, alias))
        server = checksum.rows(model, "server")
        same = union == server
        ok &= same
        if union or server:
            say(f"  {model._meta.label_lower:<26} laptops {len(union):>5}  server "
                f"{len(server):>5}  {'identical' if same else 'DIFFERENT'}")
    pending = IncomingTransaction.objects.using("server").filter(is_consumed=False).count()
    say(f"\nUnconsumed on the server: {pending}")
    return ok and pending == 0


def main():
    fresh_databases()
    say("Morning: three laptops enumerate households offline")
    for n, alias in enumerate(LAPTOPS, 1):
        morning(alias, prefix=f"L{n}-H")
    say("Midday: laptop1 and laptop2 reach the server; laptop3 stays offline")
    for alias in LAPTOPS[:2]:
        sync(alias)
    say("Afternoon: follow-up visits, corrections and a deleted form, all offline")
    for n, alias in enumerate(LAPTOPS, 1):
        afternoon(alias, prefix=f"L{n}-H")
    say("Evening: every laptop syncs")
    for alias in LAPTOPS:
        sync(alias)
    say("Evening again: the sync is repeated (a retry after a dropped link)")
    for alias in LAPTOPS:
        OutgoingTransaction.objects.using(alias).update(is_consumed_server=False)
        sync(alias)
    ok = report()
    say("\nRESULT: " + ("the server holds exactly the laptops' data, nothing duplicated"
                        if ok else "MISMATCH: see above"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
