"""The field scenario, end to end, on embedded SQLite.

field laptops --direct--> (middleman laptop) --direct--> community server --FILE--> central

Three research assistants enter a household survey on their own laptops. Two sync
at midday; the third is out of reach, so the driver's middleman laptop pulls its
data, replays it for reconciling specimens, and forwards it to the community
server. Everyone keeps working (new visits, corrections, a deleted form), then all
three laptops sync directly in the evening (laptop3's morning data now arrives by
a second route), and the evening sync is repeated, as happens when a link drops.
At night the community server exports a file that is carried to the central
server and imported twice. At the end the community and central servers must each
hold exactly the union of the laptops' data: same rows per model, same content
checksum, nothing twice.
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

from syncrouter import conf  # noqa: E402
from syncrouter.models import IncomingTransaction, OutgoingTransaction  # noqa: E402
from syncrouter.registry import site_sync_models  # noqa: E402
from syncrouter.transfer.files import (  # noqa: E402
    export_transactions,
    import_transactions,
    pending,
)
from syncrouter.trust import devices, keys  # noqa: E402
from tests import checksum, factories  # noqa: E402
from tests.testapp.models import CrfOne, HouseholdMember, SubjectVisit  # noqa: E402

LAPTOPS = settings.LAPTOPS
totals = {alias: Counter() for alias in LAPTOPS}


def say(text=""):
    print(text, flush=True)


def fresh_databases():
    shutil.rmtree(settings.DATA, ignore_errors=True)
    settings.DATA.mkdir(parents=True)
    for alias in LAPTOPS + ["middleman", "server", "central"]:
        call_command("migrate", database=alias, verbosity=0)
        factories.load_symptoms(alias)
    enrol_everyone()


def enrol_everyone():
    """Every node makes its keys; each receiving node enrols the nodes it receives from
    (as ``manage.py syncrouter keys init`` / ``keys trust`` would), and the server enrols
    the central server, to which it encrypts its files."""
    aliases = LAPTOPS + ["middleman", "server", "central"]
    for alias in aliases:
        keys.create(alias)
    senders = {"middleman": LAPTOPS, "server": LAPTOPS + ["middleman", "central"],
               "central": LAPTOPS + ["middleman", "server"]}
    for receiver, sent_by in senders.items():
        for alias in sent_by:
            node = conf.node_for_alias(alias)
            devices.trust(receiver, node.name, keys.require(alias).public.token, role=node.role)


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


def middleman_round(alias):
    """The driver's laptop pulls from a field laptop, replays for inspection, forwards."""
    pulled = OutgoingTransaction.objects.using(alias).filter(
        is_consumed_middleman=False).copy_to_incoming_transaction("middleman")
    inspected = IncomingTransaction.objects.using("middleman").filter(
        is_consumed=False).deserialize(check_hostname=False)
    forwarded = IncomingTransaction.objects.using("middleman").filter(
        is_consumed_server=False).copy_to_incoming_transaction("server")
    replayed = IncomingTransaction.objects.using("server").filter(
        is_consumed=False).deserialize(check_hostname=False)
    for message in replayed:
        totals[message.producer.removeprefix("field-")][message.outcome] += 1
    say(f"  middleman pulled {pulled.copied} from {alias}, replayed {len(inspected)} for "
        f"inspection, forwarded {forwarded.copied}; community server replayed {len(replayed)}")


def file_to_central():
    path = settings.DATA / "community-to-central.zip"
    manifest = export_transactions(path, pending("server"),
                                   recipient=conf.node_for_alias("central").name)
    first = import_transactions(path, "central")
    again = import_transactions(path, "central")  # the same USB stick, carried twice
    replayed = IncomingTransaction.objects.using("central").filter(
        is_consumed=False).deserialize(check_hostname=False)
    say(f"  exported {manifest.count} transactions to {path.name}; central imported "
        f"{first.copied}, then {again.copied} new from the second copy; replayed {len(replayed)}")


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
               "skipped": "skipped",
               "deferred": "deferred", "error": "error"}
    say(f"  {'producer':<16}" + "".join(f"{c:>10}" for c in columns.values()))
    for alias in LAPTOPS:
        totals[alias]["captured"] = OutgoingTransaction.objects.using(alias).count()
        say(f"  {'field-' + alias:<16}" + "".join(f"{totals[alias][c]:>10}" for c in columns))
    ok = True
    for node in ("server", "central"):
        say(f"\n{node.capitalize()} against the union of the laptops (rows, content checksum)")
        for model in site_sync_models:
            union = sorted(r for alias in LAPTOPS for r in checksum.rows(model, alias))
            held = checksum.rows(model, node)
            same = union == held
            ok &= same
            if union or held:
                say(f"  {model._meta.label_lower:<26} laptops {len(union):>5}  {node} "
                    f"{len(held):>5}  {'identical' if same else 'DIFFERENT'}")
        waiting = IncomingTransaction.objects.using(node).filter(is_consumed=False).count()
        say(f"  unconsumed on {node}: {waiting}")
        ok &= waiting == 0
    return ok


def main():
    fresh_databases()
    say("Morning: three laptops enumerate households offline")
    for n, alias in enumerate(LAPTOPS, 1):
        morning(alias, prefix=f"L{n}-H")
    say("Midday: laptop1 and laptop2 reach the server; the middleman visits laptop3")
    for alias in LAPTOPS[:2]:
        sync(alias)
    middleman_round("laptop3")
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
    say("Night: the community server's file goes to the central server")
    file_to_central()
    ok = report()
    say("\nRESULT: " + ("community and central servers hold exactly the laptops' data, "
                        "nothing duplicated"
                        if ok else "MISMATCH: see above"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
