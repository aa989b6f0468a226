"""Convergence, proven on generated histories (guarantee 9).

A Hypothesis ``RuleBasedStateMachine`` plays three field laptops, a relay
laptop (middleman) and a server over the schema of ``tests/convapp``: FK chains
with PROTECT, CASCADE and SET_NULL, a self-referential FK, a many-to-many, a
multi-table child and an integer-pk model. Laptops start from shared rows (as
if cloned from one image) and then edit offline: create, edit, re-point,
rename, delete, delete and re-create under the same key, runs of changes in
one ``atomic()``, bulk paths, ``save(update_fields=...)``, link changes. The
server edits too. Transactions travel at random points: directly, part of a
laptop's backlog at a time, through the relay, or in files imported in any
order, again and again.

After every replay:

* **Fast path = one transaction at a time.** The server's state before the
  replay is copied to a reference node, which replays the same transactions
  with the fast path off and one unit at a time. Both must end identical:
  the data, which transactions were consumed, deferred or in error, and the
  conflict ledger.
* **Nothing in error.** The generated histories are all valid; no transaction
  may end ``is_error``.
* **No silent overwrite.** A value the server wrote (unique markers no laptop
  can write) changes only with a conflict on record whose incoming change won.

At the end of every example everything still on the laptops, the relay and in
files is delivered, conflicts held for a decision are decided, and replay runs
until nothing changes:

* **Nothing waits without a cause.** Unless the history deleted rows other
  nodes knew (a cause of lasting waits: a child whose parent another node
  deleted), every transaction is consumed. In any case none is in error.
* **Nothing lost.** Every field and link of every laptop row that only that
  laptop wrote holds the laptop's value on the server; rows only it deleted
  are gone.

``SYNCROUTER_MODEL_PROFILE=long`` runs the long profile (see ``PROFILES``).
Failing examples found so far are kept as ordinary tests at the end.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from django.core.management.color import no_style
from django.db import IntegrityError, connections, transaction
from django.db.models import ProtectedError
from django.test.utils import override_settings
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from syncrouter import conf, serialization as ser
from syncrouter.models import Conflict, IncomingTransaction, OutgoingTransaction, ProducerClock
from syncrouter.replay.conflicts import resolve
from syncrouter.replay.runner import Replayer
from syncrouter.state import replaying
from syncrouter.transfer.files import export_transactions, import_transactions, pending
from tests.convapp.models import Family, Leader, Person, Site, Tag, Visit
from tests.support import pg
from tests.support.checksum import table_checksum

LAPTOPS = ("lap1", "lap2", "lap3")
RELAY = "relay"
SERVERS = {"sqlite": ("server", "ref"), "postgres": ("pgserver", "pgref")}
MODELS = (Site, Tag, Family, Person, Leader, Visit)
POLICIES = ("server_wins", "client_wins", "newer_wins", "manual")
#: Codes a laptop and the server may both create: an insert meets another row.
SHARED_SITES = ("SS0", "SS1")

PROFILES = {
    # CI: a few hundred examples over the two server backends, the same ones on every
    # run (derandomized), so CI's verdict is the code's and not the draw's. New histories
    # are explored by SYNCROUTER_MODEL_PROFILE=explore (random, as many examples) and
    # the long profile; a failure either finds goes into a regression test.
    "ci": {"max_examples": int(os.environ.get("SYNCROUTER_MODEL_EXAMPLES", 100)),
           "stateful_step_count": 30, "derandomize": True},
    "explore": {"max_examples": int(os.environ.get("SYNCROUTER_MODEL_EXAMPLES", 100)),
                "stateful_step_count": 30},
    # SYNCROUTER_MODEL_PROFILE=long: at least 20,000 operations.
    "long": {"max_examples": 700, "stateful_step_count": 40},
}
PROFILE = PROFILES[os.environ.get("SYNCROUTER_MODEL_PROFILE", "ci")]

pytestmark = pytest.mark.django_db(
    databases=["server", "ref", RELAY, *LAPTOPS] + (["pgserver", "pgref"] if pg.AVAILABLE
                                                    else []),
    transaction=True)


def _tables() -> list[str]:
    tables = []
    for model in (*MODELS, IncomingTransaction, OutgoingTransaction, Conflict, ProducerClock):
        tables.append(model._meta.db_table)
        tables += [f.remote_field.through._meta.db_table
                   for f in model._meta.local_many_to_many]
    return tables


def wipe(alias: str) -> None:
    """Empty every table the machine uses on ``alias`` (capture off, guard quiet)."""
    connection = connections[alias]
    with transaction.atomic(using=alias), replaying(alias), connection.cursor() as cursor:
        for table in _tables():
            cursor.execute(f"DELETE FROM {connection.ops.quote_name(table)}")


def clone(source: str, target: str) -> None:
    """Make ``target`` hold exactly what ``source`` holds (same backend), sequences included."""
    quote = connections[target].ops.quote_name
    wipe(target)
    with transaction.atomic(using=target), replaying(target):
        for table in _tables():
            with connections[source].cursor() as cursor:
                cursor.execute(f"SELECT * FROM {quote(table)}")
                names = [column[0] for column in cursor.description]
                rows = cursor.fetchall()
            if rows:
                with connections[target].cursor() as cursor:
                    cursor.executemany(
                        f"INSERT INTO {quote(table)} ({', '.join(quote(n) for n in names)}) "
                        f"VALUES ({', '.join(['%s'] * len(names))})", rows)
    models = [*MODELS, Person.tags.through, Conflict, ProducerClock]
    statements = connections[target].ops.sequence_reset_sql(no_style(), models)
    if statements:
        with connections[target].cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)


def state(alias: str) -> dict:
    """What replay decides, comparable across nodes: data, marks, ledger."""
    marks = sorted(IncomingTransaction.objects.using(alias).values_list(
        "id", "is_consumed", "is_deferred", "is_error"))
    ledger = sorted(Conflict.objects.using(alias).values_list("tx_id", "resolution", "policy"))
    return {"data": {m._meta.label_lower: table_checksum(m, alias) for m in MODELS},
            "links": sorted(Person.tags.through.objects.using(alias).values_list(
                "person__code", "tag__code")),
            "marks": marks, "ledger": ledger}


#: What the runs did, over every example of the session: reported at the end of the test.
TALLY: dict = defaultdict(int)


class History(RuleBasedStateMachine):
    """One history of laptops, relay and server; see the module docstring."""

    server = "server"
    reference = "ref"

    def _tally(self, what: str, count: int = 1) -> None:
        TALLY[what] += count

    def __init__(self):
        super().__init__()
        for alias in (self.server, self.reference, RELAY, *LAPTOPS):
            wipe(alias)
        self.counter = 0
        #: (label, identity, field) -> nodes that wrote it ("baseline": every node, at start).
        self.writers: dict = defaultdict(set)
        #: (label, identity) -> nodes that deleted the row.
        self.deleted_by: dict = defaultdict(set)
        #: (label, identity, field) -> the marker the server wrote last.
        self.marks: dict = {}
        #: Rows other nodes hold were deleted (or got children on the server):
        #: lasting waits then have a cause.
        self.hazard = False
        self.server_children: set = set()
        self.files: list[Path] = []
        self.directory = tempfile.mkdtemp(prefix="syncrouter-model-")
        self.settings = None

    # -- set-up ---------------------------------------------------------------------------

    @initialize(policy=st.sampled_from(POLICIES))
    def baseline(self, policy):
        """Shared rows on every node, as if every laptop was cloned from one image."""
        self.policy = policy
        self.settings = override_settings(SYNCROUTER_CONFLICT_POLICY=policy)
        self.settings.enable()
        ids = {code: uuid.uuid4() for code in ("BF0", "BF1", "BP0", "BP1", "BT0", "BT1")}
        for alias in (self.server, *LAPTOPS):
            with replaying(alias):  # not captured: every node has them already
                site = Site.objects.using(alias).create(code="BS0")
                tags = [Tag.objects.using(alias).create(id=ids[f"BT{n}"], code=f"BT{n}")
                        for n in range(2)]
                for n in range(2):
                    family = Family.objects.using(alias).create(id=ids[f"BF{n}"], code=f"BF{n}")
                    Person.objects.using(alias).create(id=ids[f"BP{n}"], code=f"BP{n}",
                                                       family=family, site=site)
                Person.objects.using(alias).get(code="BP0").tags.add(tags[0])
        self.writers[("link", str(ids["BP0"]), "BT0")].add("baseline")
        for model, codes in ((Family, ("BF0", "BF1")), (Person, ("BP0", "BP1")),
                             (Tag, ("BT0", "BT1")), (Site, ("BS0",))):
            for code in codes:
                row = model.objects.using(self.server).get(code=code)
                for field in self._fields(model):
                    self.writers[self._key(row, field)].add("baseline")

    def teardown(self):
        try:
            if self.settings is not None:
                self.quiesce()
        finally:
            if self.settings is not None:
                self.settings.disable()
            for path in self.files:
                path.unlink(missing_ok=True)

    # -- bookkeeping ----------------------------------------------------------------------

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    @staticmethod
    def _identity(row):
        return row.code if isinstance(row, Site) else str(row.pk)

    @staticmethod
    def _label(row) -> str:
        """A leader is a person: one row, edited either way."""
        return "convapp.person" if isinstance(row, Person) else row._meta.label_lower

    def _key(self, row, field: str) -> tuple:
        return (self._label(row), self._identity(row), field)

    @staticmethod
    def _fields(model) -> list[str]:
        names = ["code", "note", "hits"]
        if issubclass(model, Person):
            names += ["family", "site", "mentor"]
        if model is Leader:
            names += ["rank"]
        if model is Visit:
            names += ["person"]
        return names

    def _wrote(self, node: str, row, fields=None):
        return [lambda f=f: self.writers[self._key(row, f)].add(node)
                for f in (fields or self._fields(type(row)))]

    def _rows(self, alias: str, model) -> list:
        return list(model.objects.using(alias).order_by("code"))

    # -- laptop operations: each returns the bookkeeping to record if it commits ------------

    def op_create(self, data, laptop: str) -> list:
        kind = data.draw(st.sampled_from(["family", "person", "leader", "visit", "site", "tag"]))
        n = self._next()
        if kind == "family":
            row = Family.objects.using(laptop).create(code=f"{laptop}-F{n}", note=f"n{n}")
        elif kind == "tag":
            row = Tag.objects.using(laptop).create(code=f"{laptop}-T{n}")
        elif kind == "site":
            code = data.draw(st.sampled_from([f"{laptop}-S{n}", *SHARED_SITES]))
            if Site.objects.using(laptop).filter(code=code).exists():
                return []
            row = Site.objects.using(laptop).create(code=code, hits=n)
        elif kind == "visit":
            people = self._rows(laptop, Person)
            if not people:
                return []
            person = data.draw(st.sampled_from(people))
            row = Visit.objects.using(laptop).create(person=person, code=f"{laptop}-V{n}")
        else:
            families = self._rows(laptop, Family)
            if not families:
                return []
            values = dict(
                code=f"{laptop}-P{n}", family=data.draw(st.sampled_from(families)),
                site=data.draw(st.none() | st.sampled_from(self._rows(laptop, Site) or [None])),
                mentor=data.draw(st.none() | st.sampled_from(
                    self._rows(laptop, Person) or [None])))
            model = Leader if kind == "leader" else Person
            if kind == "leader":
                values["rank"] = n
            row = model.objects.using(laptop).create(**values)
        return self._wrote(laptop, row)

    def op_edit(self, data, laptop: str) -> list:
        model = data.draw(st.sampled_from([Family, Person, Visit, Site]))
        rows = self._rows(laptop, model)
        if not rows:
            return []
        row = data.draw(st.sampled_from(rows))
        n = self._next()
        how = data.draw(st.sampled_from(["save", "update_fields", "by_hand"]))
        if how == "update_fields":  # note changes in memory only: it must not travel
            row.note = f"unsaved-{n}"
            row.hits = n
            row.save(update_fields=["hits"])
            return self._wrote(laptop, row, ["hits"])
        field = data.draw(st.sampled_from(["note", "hits"]))
        value = f"{laptop}-{n}" if field == "note" else n
        if how == "by_hand" and model in (Family, Site):  # never loaded: an instance by hand
            stored = model.objects.using(laptop).values().get(pk=row.pk)
            row = model(**{**stored, field: value})
            row.save(using=laptop, force_update=True)
        else:
            setattr(row, field, value)
            row.save()
        return self._wrote(laptop, row, [field])

    def op_repoint(self, data, laptop: str) -> list:
        people = self._rows(laptop, Person)
        if not people:
            return []
        person = data.draw(st.sampled_from(people))
        field = data.draw(st.sampled_from(["family", "site", "mentor"]))
        choices = {"family": self._rows(laptop, Family), "site": self._rows(laptop, Site),
                   "mentor": self._rows(laptop, Person)}[field]
        target = data.draw(st.sampled_from(choices)) if choices else None
        if field == "family" and target is None:
            return []
        if field != "family" and data.draw(st.booleans()):
            target = None
        setattr(person, field, target)
        person.save()
        return self._wrote(laptop, person, [field])

    def op_rename(self, data, laptop: str) -> list:
        model = data.draw(st.sampled_from([Family, Person]))
        own = [row for row in self._rows(laptop, model) if row.code.startswith(laptop)]
        if not own:
            return []
        row = data.draw(st.sampled_from(own))
        row.code = f"{laptop}-R{self._next()}"
        row.save()
        return self._wrote(laptop, row, ["code"])

    def op_delete(self, data, laptop: str) -> list:
        model = data.draw(st.sampled_from([Family, Person, Visit, Site, Tag]))
        rows = self._rows(laptop, model)
        if not rows:
            return []
        row = data.draw(st.sampled_from(rows))
        effects = []
        if isinstance(row, Person):
            for child in Person.objects.using(laptop).filter(mentor=row):
                effects += self._wrote(laptop, child, ["mentor"])
            for visit in Visit.objects.using(laptop).filter(person=row):
                effects.append(lambda v=visit: self.deleted_by[
                    ("convapp.visit", str(v.pk))].add(laptop))
        if isinstance(row, Site):
            for child in Person.objects.using(laptop).filter(site=row):
                effects += self._wrote(laptop, child, ["site"])
        if isinstance(row, (Person, Tag)):  # its links go with it
            links = (row.tags.all() if isinstance(row, Person) else row.person_set.all())
            for other in links:
                person, tag = (row, other) if isinstance(row, Person) else (other, row)
                effects.append(lambda p=person, t=tag: self.writers[
                    ("link", str(p.pk), t.code)].add(laptop))
        shared = not row.code.startswith(laptop) or self._identity(row) in self.server_children
        if isinstance(row, Visit):
            shared = not row.code.startswith(laptop)
        label, identity = self._label(row), self._identity(row)
        try:
            row.delete()
        except ProtectedError:
            return []

        def record():
            self.deleted_by[(label, identity)].add(laptop)
            if shared:
                self.hazard = True
        return effects + [record]

    def op_recreate(self, data, laptop: str) -> list:
        """Delete a family of the laptop's own and create another under the same key."""
        own = [row for row in self._rows(laptop, Family) if row.code.startswith(laptop)
               and not Person.objects.using(laptop).filter(family=row).exists()]
        if not own:
            return []
        row = data.draw(st.sampled_from(own))
        identity = str(row.pk)
        row.delete()
        again = Family.objects.using(laptop).create(code=row.code, note="again")
        return [lambda: self.deleted_by[("convapp.family", identity)].add(laptop),
                *self._wrote(laptop, again)]

    def op_links(self, data, laptop: str) -> list:
        people, tags = self._rows(laptop, Person), self._rows(laptop, Tag)
        if not people or not tags:
            return []
        person = data.draw(st.sampled_from(people))
        how = data.draw(st.sampled_from(["add", "remove", "clear", "reverse"]))
        if how == "clear":
            touched = list(person.tags.all())
            person.tags.clear()
        else:
            tag = data.draw(st.sampled_from(tags))
            touched = [tag]
            if how == "reverse":
                tag.person_set.add(person)
            else:
                getattr(person.tags, how)(tag)
        return [lambda t=tag: self.writers[("link", str(person.pk), t.code)].add(laptop)
                for tag in touched]

    def op_bulk(self, data, laptop: str) -> list:
        how = data.draw(st.sampled_from(["bulk_create", "update", "bulk_update"]))
        n = self._next()
        if how == "bulk_create":
            rows = Family.objects.using(laptop).bulk_create(
                [Family(code=f"{laptop}-F{n}-{i}", hits=i) for i in range(3)])
            return [effect for row in rows for effect in self._wrote(laptop, row)]
        rows = self._rows(laptop, Family)
        if how == "update":
            Family.objects.using(laptop).filter(pk__in=[r.pk for r in rows[::2]]).update(hits=n)
            return [effect for row in rows[::2] for effect in self._wrote(laptop, row, ["hits"])]
        for row in rows[1::2]:
            row.note = f"{laptop}-bulk-{n}"
        Family.objects.using(laptop).bulk_update(rows[1::2], ["note"])
        return [effect for row in rows[1::2] for effect in self._wrote(laptop, row, ["note"])]

    OPS = ("op_create", "op_edit", "op_repoint", "op_rename", "op_delete", "op_recreate",
           "op_links", "op_bulk")

    def _change(self, data, laptop: str, op: str) -> None:
        """One change, captured as the producer's own database transaction."""
        for effect in getattr(self, op)(data, laptop):
            effect()

    # One rule per kind of change, so that changes outnumber syncs in a history.
    @rule(data=st.data(), laptop=st.sampled_from(LAPTOPS))
    def laptop_creates(self, data, laptop):
        self._change(data, laptop, "op_create")

    @rule(data=st.data(), laptop=st.sampled_from(LAPTOPS))
    def laptop_creates_more(self, data, laptop):
        self._change(data, laptop, "op_create")

    @rule(data=st.data(), laptop=st.sampled_from(LAPTOPS))
    def laptop_edits(self, data, laptop):
        self._change(data, laptop, "op_edit")

    @rule(data=st.data(), laptop=st.sampled_from(LAPTOPS))
    def laptop_edits_more(self, data, laptop):
        self._change(data, laptop, "op_edit")

    @rule(data=st.data(), laptop=st.sampled_from(LAPTOPS))
    def laptop_repoints(self, data, laptop):
        self._change(data, laptop, "op_repoint")

    @rule(data=st.data(), laptop=st.sampled_from(LAPTOPS))
    def laptop_renames(self, data, laptop):
        self._change(data, laptop, "op_rename")

    @rule(data=st.data(), laptop=st.sampled_from(LAPTOPS))
    def laptop_deletes(self, data, laptop):
        self._change(data, laptop, "op_delete")

    @rule(data=st.data(), laptop=st.sampled_from(LAPTOPS))
    def laptop_recreates(self, data, laptop):
        self._change(data, laptop, "op_recreate")

    @rule(data=st.data(), laptop=st.sampled_from(LAPTOPS))
    def laptop_links(self, data, laptop):
        self._change(data, laptop, "op_links")

    @rule(data=st.data(), laptop=st.sampled_from(LAPTOPS))
    def laptop_bulk(self, data, laptop):
        self._change(data, laptop, "op_bulk")

    @rule(data=st.data(), laptop=st.sampled_from(LAPTOPS),
          ops=st.lists(st.sampled_from(OPS), min_size=2, max_size=4))
    def laptop_atomic_run(self, data, laptop, ops):
        """Several changes in one ``atomic()``: they travel and apply together, or not at all."""
        effects = []
        try:
            with transaction.atomic(using=laptop):
                for op in ops:
                    effects += getattr(self, op)(data, laptop)
        except (IntegrityError, ProtectedError):
            return
        for effect in effects:
            effect()

    # -- server operations ----------------------------------------------------------------

    @rule(data=st.data(), model=st.sampled_from([Family, Person, Visit, Site]),
          field=st.sampled_from(["note", "hits"]))
    def server_edit(self, data, model, field):
        rows = self._rows(self.server, model)
        if not rows:
            return
        row = data.draw(st.sampled_from(rows))
        n = self._next()
        value = f"srv-{n}" if field == "note" else 1_000_000 + n
        setattr(row, field, value)
        row.save()
        self.writers[self._key(row, field)].add("server")
        self.marks[self._key(row, field)] = value

    @rule(data=st.data())
    def server_link(self, data):
        people, tags = self._rows(self.server, Person), self._rows(self.server, Tag)
        if people and tags:
            person, tag = data.draw(st.sampled_from(people)), data.draw(st.sampled_from(tags))
            person.tags.add(tag)
            self.writers[("link", str(person.pk), tag.code)].add("server")

    @rule(code=st.sampled_from(SHARED_SITES))
    def server_site(self, code):
        if not Site.objects.using(self.server).filter(code=code).exists():
            Site.objects.using(self.server).create(code=code, note="server's")
            for field in self._fields(Site):
                self.writers[("convapp.site", code, field)].add("server")

    @rule(data=st.data())
    def server_visit(self, data):
        people = self._rows(self.server, Person)
        if people:
            person = data.draw(st.sampled_from(people))
            Visit.objects.using(self.server).create(person=person, code=f"srv-V{self._next()}")
            self.server_children.add(str(person.pk))

    # -- transfer -------------------------------------------------------------------------

    @rule(laptop=st.sampled_from(LAPTOPS))
    def push(self, laptop):
        OutgoingTransaction.objects.using(laptop).filter(
            is_consumed_server=False).copy_to_incoming_transaction(self.server)

    @rule(data=st.data(), laptop=st.sampled_from(LAPTOPS))
    def push_some_groups(self, data, laptop):
        """Some of the laptop's database transactions, whole: later ones may arrive first."""
        waiting = OutgoingTransaction.objects.using(laptop).filter(is_consumed_server=False)
        groups = sorted(set(waiting.values_list("db_transaction_id", flat=True)), key=str)
        if groups:
            chosen = data.draw(st.lists(st.sampled_from(groups), min_size=1, unique=True))
            waiting.filter(db_transaction_id__in=chosen).copy_to_incoming_transaction(
                self.server)

    @rule(laptop=st.sampled_from(LAPTOPS))
    def pull_to_relay(self, laptop):
        OutgoingTransaction.objects.using(laptop).filter(
            is_consumed_middleman=False).copy_to_incoming_transaction(RELAY)

    @rule()
    def relay_forwards(self):
        IncomingTransaction.objects.using(RELAY).filter(
            is_consumed_server=False).copy_to_incoming_transaction(self.server)

    @rule(laptop=st.sampled_from(LAPTOPS), mark=st.booleans())
    def export(self, laptop, mark):
        path = Path(self.directory) / f"{laptop}-{self._next()}.zip"
        export_transactions(path, pending(laptop), mark=mark)
        self.files.append(path)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def import_file(self, data):
        import_transactions(data.draw(st.sampled_from(self.files)), self.server)

    @precondition(lambda self: self.policy == "manual")
    @rule(data=st.data(), keep=st.sampled_from(["server", "incoming"]))
    def decide(self, data, keep):
        held = list(Conflict.objects.using(self.server).filter(resolution="pending")
                    .order_by("tx_id"))
        if held:
            resolve(data.draw(st.sampled_from(held)), keep=keep, by="model-test")

    # -- replay and its invariants ----------------------------------------------------------

    @rule(batch_size=st.sampled_from([1, 2, 7, 500]))
    def replay(self, batch_size):
        clone(self.server, self.reference)
        IncomingTransaction.objects.using(self.server).filter(is_consumed=False).deserialize(
            check_hostname=False, batch_size=batch_size)
        one_by_one = Replayer(IncomingTransaction.objects.using(self.reference).filter(
            is_consumed=False), check_hostname=False, batch_size=1)
        one_by_one.fast_path = False
        one_by_one.run()
        assert state(self.server) == state(self.reference), "fast path != one at a time"

    @invariant()
    def nothing_in_error(self):
        self._tally("steps")
        errors = IncomingTransaction.objects.using(self.server).filter(is_error=True)
        assert not errors.exists(), [f"{row}: {row.error}" for row in errors]

    @invariant()
    def server_values_change_only_through_a_recorded_conflict(self):
        if not self.marks:
            return
        won = defaultdict(set)
        for tx_id, model, key in Conflict.objects.using(self.server).filter(
                resolution="incoming_applied").values_list("tx_id", "model", "key"):
            won[model].add(key)
            tx = IncomingTransaction.objects.using(self.server).filter(id=tx_id).first()
            if tx is not None:
                won[model].add(tx.tx_pk)
        for (label, identity, field), value in self.marks.items():
            model = {m._meta.label_lower: m for m in MODELS}[label]
            lookup = {"code": identity} if model is Site else {"pk": identity}
            row = model.objects.using(self.server).filter(**lookup).first()
            current = None if row is None else getattr(row, field)
            if current != value:
                assert identity in won[label] or ser.dumps([identity]) in won[label], (
                    f"{label} {identity}.{field}: the server wrote {value!r}, now {current!r}, "
                    f"with no conflict won by the incoming change")

    # -- the end of the history -----------------------------------------------------------

    def quiesce(self):
        """Deliver everything, decide every held conflict, replay until nothing changes."""
        for laptop in LAPTOPS:
            self.push(laptop)
        self.relay_forwards()
        for path in self.files:
            import_transactions(path, self.server)
        before = None
        for _ in range(8):
            for conflict in Conflict.objects.using(self.server).filter(resolution="pending"):
                resolve(conflict, keep="server", by="model-test")
            self.replay(500)
            self.nothing_in_error()
            self.server_values_change_only_through_a_recorded_conflict()
            now = state(self.server)
            if now == before:
                break
            before = now
        self._tally("examples")
        rows = IncomingTransaction.objects.using(self.server)
        self._tally("transactions", rows.count())
        self._tally("conflicts", Conflict.objects.using(self.server).count())
        self._tally("deferred at least once", rows.exclude(error="").filter(
            is_consumed=True).count())
        waiting = rows.filter(is_consumed=False)
        self._tally("waiting at the end", waiting.count())
        if not self.hazard:
            assert not waiting.exists(), [f"{row}: {row.error}" for row in waiting]
        self.laptop_rows_arrived()

    def laptop_rows_arrived(self):
        """Every laptop row, field and link only that laptop wrote is on the server as written."""
        for laptop in LAPTOPS:
            for model in (Family, Person, Leader, Visit, Site, Tag):
                for row in model.objects.using(laptop).all():
                    self._compare(laptop, row)
            for label, identity in [key for key, nodes in self.deleted_by.items()
                                    if nodes == {laptop}]:
                fields = [f for (lbl, ident, f) in self.writers if (lbl, ident) == (
                    label, identity)]
                if self.hazard or any(self.writers[(label, identity, f)] - {laptop, "baseline"}
                                      for f in fields):
                    continue
                model = {m._meta.label_lower: m for m in MODELS}[label]
                lookup = {"code": identity} if model is Site else {"pk": identity}
                assert not model.objects.using(self.server).filter(**lookup).exists(), (
                    f"{label} {identity}, deleted only by {laptop}, is still on the server")

    def _waiting(self, laptop: str, row) -> bool:
        """Whether a change of ``row`` by ``laptop`` is still waiting on the server."""
        return IncomingTransaction.objects.using(self.server).filter(
            producer=conf.node_for_alias(laptop).name, is_consumed=False,
            tx_pk=str(row.pk)).exists()

    def _compare(self, laptop: str, row) -> None:
        label = self._label(row)
        identity = self._identity(row)
        if self.deleted_by.get((label, identity), set()) - {laptop}:
            return
        if self._waiting(laptop, row):  # allowed only where the history gives a cause
            assert self.hazard, f"{label} {identity} of {laptop} waits without a cause"
            return
        model = type(row)
        lookup = {"code": identity} if model is Site else {"pk": identity}
        theirs = model.objects.using(self.server).filter(**lookup).first()
        if theirs is None:
            assert self.hazard, f"{label} {identity} of {laptop} never reached the server"
            return
        for field in self._fields(model):
            if self.writers[(label, identity, field)] - {laptop, "baseline"}:
                continue
            mine, other = getattr(row, field), getattr(theirs, field)
            if hasattr(mine, "natural_key") and self.deleted_by.get(
                    (self._label(mine), self._identity(mine)), set()) - {laptop}:
                continue  # another node deleted the row it points to: SET_NULL there
            if hasattr(mine, "natural_key") and self._waiting(laptop, mine):
                assert self.hazard, f"{label} {identity}.{field}: its target waits without a cause"
                continue  # a change of the row it points to (a rename) waits
            if hasattr(mine, "natural_key"):
                mine = mine.natural_key()
            if hasattr(other, "natural_key"):
                other = other.natural_key()
            assert mine == other, (f"{label} {identity}.{field}: {laptop} has {mine!r}, the "
                                   f"server {other!r}")
        if isinstance(row, Person):
            theirs_tags = {tag.code: tag for tag in theirs.tags.all()}
            mine_tags = {tag.code: tag for tag in row.tags.all()}
            for code, tag in {**theirs_tags, **mine_tags}.items():
                if self.writers[("link", identity, code)] - {laptop, "baseline"}:
                    continue
                if self.deleted_by.get(("convapp.tag", str(tag.pk)), set()) - {laptop}:
                    continue
                if self._waiting(laptop, tag):  # its delete waits (allowed only with a cause)
                    assert self.hazard, f"tag {code} of {laptop} waits without a cause"
                    continue
                assert (code in mine_tags) == (code in theirs_tags), (
                    f"link {row.code}-{code}: {laptop} has it {code in mine_tags}, the server "
                    f"{code in theirs_tags}")


def _machine(backend: str):
    server, reference = SERVERS[backend]
    return type(f"History_{backend}", (History,), {"server": server, "reference": reference})


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_generated_histories_converge(backend):
    if backend == "postgres" and not pg.AVAILABLE:
        pytest.skip(pg.REASON)
    TALLY.clear()
    try:
        run_state_machine_as_test(_machine(backend), settings=settings(
            deadline=None, suppress_health_check=list(HealthCheck), print_blob=True,
            **PROFILE))
    finally:
        print(f"\n{backend}: " + ", ".join(f"{k} {v}" for k, v in sorted(TALLY.items())))
