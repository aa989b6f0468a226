"""``manage.py syncrouter <push|pull|replay|sync|status|export|import|keys>``.

Exit codes, for scripts and schedulers:

====  =====================================================================
0     done, nothing needs attention
1     done, but some transactions are deferred, in conflict or in error,
      or were left untouched as this node's own (``replay``, ``sync``,
      ``status``); payloads ``keys rotate-payloads`` cannot decrypt
2     usage or configuration error (unknown alias, a client asked to replay)
3     a database could not be reached, or the connection broke mid-copy
      (finished batches stay done; run again)
4     data refused, everything else done: a batch file damaged, altered or
      malformed (nothing of it imported; the other files are), or
      transactions the next hop refused in ``push``, ``pull``, ``sync`` or
      ``export`` (left pending and listed by ``status``, which then exits 4
      too; the other transactions and producers went on)
====  =====================================================================

A progress line with counts and rate is drawn only when stdout is a terminal.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from enum import IntEnum

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections

from ... import conf
from ...enums import ReplayOutcome
from ...exceptions import ReplayRefused, SyncError
from ...models import IncomingTransaction
from ...replay import own
from ...status import node_status
from ...transfer.copy import CopyInterrupted, CopyRefused, CopyResult
from ...transfer.files import ExportRefused, export_transactions, import_transactions, pending
from ...transfer.rows import sent_flag
from ...trust import atrest, devices, keys, rotation

logger = logging.getLogger("syncrouter.command")

ATTENTION = (ReplayOutcome.DEFERRED, ReplayOutcome.CONFLICT, ReplayOutcome.ERROR,
             ReplayOutcome.REFUSED)
DUMMY = "django.db.backends.dummy"  # what Django puts in an empty 'default': {}


class Exit(IntEnum):
    OK = 0
    ATTENTION = 1
    USAGE = 2
    UNREACHABLE = 3
    REFUSED = 4


def unreachable(alias: str, timeout: float) -> str | None:
    """None if a fresh connection to ``alias`` opens within ``timeout`` seconds, else why not.

    The probe uses its own connection so a dead server costs ``timeout``, not the
    driver's default (minutes, for a silently dropped network).
    """
    connection = connections.create_connection(alias)
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        name = str(config["NAME"])
        if ":memory:" not in name and "mode=memory" not in name and not os.path.exists(name):
            return f"SQLite file {name} does not exist (drive not mounted?)"
    elif connection.vendor in ("postgresql", "mysql"):
        connection.settings_dict = {**config, "OPTIONS": {
            **config.get("OPTIONS", {}), "connect_timeout": max(1, round(timeout))}}
    try:
        connection.ensure_connection()
    except DatabaseError as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    finally:
        connection.close()
    return None


class Progress:
    """A one-line ``\\r`` counter with rate, drawn only on a terminal."""

    def __init__(self, out, label: str):
        self.out, self.label = out, label
        self.enabled = out.isatty()
        self.started = time.monotonic()
        self.drawn = False

    def __call__(self, done: int, detail: str = "") -> None:
        if not self.enabled:
            return
        rate = done / max(time.monotonic() - self.started, 1e-6)
        self.out.write(f"\r{self.label}: {done:,}{detail} ({rate:,.0f}/s)  ", ending="")
        self.out.flush()
        self.drawn = True

    def copy(self, result: CopyResult) -> None:
        self(result.copied + result.already_present, f" ({result.already_present:,} already there)")

    def end(self) -> None:
        if self.drawn:
            self.out.write("")


class Command(BaseCommand):
    help = "Move transactions between nodes, replay them, and report where a node stands."

    def add_arguments(self, parser):
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument("--batch-size", type=int, default=None,
                            help="Rows per batch (default SYNCROUTER_BATCH_SIZE).")
        source = argparse.ArgumentParser(add_help=False)
        source.add_argument("--source", help="Alias to send from (default: the local alias).")
        target = argparse.ArgumentParser(add_help=False)
        target.add_argument("--target", help="Alias to send to (default: 'server').")
        own = argparse.ArgumentParser(add_help=False)
        own.add_argument("--allow-own-host", action="store_true",
                         help="Replay this node's own transactions too, those whose "
                              "producer is this node's name "
                              "(deserialize(check_hostname=False)).")
        timeout = argparse.ArgumentParser(add_help=False)
        timeout.add_argument("--timeout", type=float, default=5.0,
                             help="Seconds to wait for a connection (default 5).")
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="subcommand")
        sub.add_parser("push", parents=[common, source, target, timeout],
                       help="Copy pending transactions from --source to --target.")
        pull = sub.add_parser("pull", parents=[common, timeout],
                              help="Copy pending transactions from --source into this node.")
        pull.add_argument("--source", required=True, help="Alias to pull from (a field laptop).")
        pull.add_argument("--target", help="Alias to pull into (default: the local alias).")
        replay = sub.add_parser("replay", parents=[common, own],
                                help="Apply received transactions on --target.")
        replay.add_argument("--target", help="Alias to replay on (default: the local alias).")
        sync = sub.add_parser("sync", parents=[common, source, target, own, timeout],
                              help="push, then replay on the target, when it is reachable.")
        sync.add_argument("--watch", action="store_true", help="Repeat until stopped.")
        sync.add_argument("--interval", type=float, default=60.0,
                          help="Seconds between cycles with --watch (default 60); after a "
                               "failed cycle the wait doubles, up to --max-backoff.")
        sync.add_argument("--max-backoff", type=float, default=900.0)
        sync.add_argument("--max-cycles", type=int, default=None,
                          help="Stop --watch after this many cycles.")
        status = sub.add_parser("status", help="Per producer: held, gaps, pending, errors.")
        status.add_argument("--alias", help="Alias to report on (default: the local alias).")
        export = sub.add_parser("export", parents=[common, source],
                                help="Write pending transactions to a batch file.")
        export.add_argument("path")
        export.add_argument("--mark", action="store_true",
                            help="Mark the exported rows sent (default: leave them pending, "
                                 "so the next file carries them again if this one is lost).")
        import_ = sub.add_parser("import", parents=[common],
                                 help="Load batch files into this node's inbox.")
        import_.add_argument("paths", nargs="+")
        import_.add_argument("--target", help="Alias to load into (default: the local alias).")
        export.add_argument("--to", dest="recipient",
                            help="Node the file is for: it is encrypted to that node's key "
                                 "(enrolled with 'keys trust').")
        keys = sub.add_parser("keys", help="This node's keys and the devices it trusts.")
        actions = keys.add_subparsers(dest="keys_action", required=True, metavar="action")
        alias = argparse.ArgumentParser(add_help=False)
        alias.add_argument("--alias", help="The node's alias (default: the local alias).")
        init = actions.add_parser("init", parents=[alias], help="Create this node's key pair.")
        init.add_argument("--replace", action="store_true",
                          help="Replace an existing key (devices that trust it must re-enrol).")
        actions.add_parser("show", parents=[alias],
                           help="Print the public key and fingerprint, for enrolment.")
        trust = actions.add_parser("trust", parents=[alias],
                                   help="Enrol a node whose transactions this node accepts.")
        trust.add_argument("name", help="The node's name (its producer name).")
        trust.add_argument("public_key", help="Its public key, as 'keys show' prints it.")
        trust.add_argument("--role", default="client", choices=conf.ROLES)
        trust.add_argument("--replace", action="store_true",
                           help="The node has a new key: enrol it instead of the old one.")
        revoke = actions.add_parser("revoke", parents=[alias],
                                    help="Refuse a node's transactions from now on.")
        revoke.add_argument("name")
        revoke.add_argument("--after", type=int, default=None,
                            help="Refuse its sequences above this (default: the highest "
                                 "already received here; those stay valid).")
        actions.add_parser("list", parents=[alias], help="The enrolled nodes.")
        payload_key = actions.add_parser(
            "new-payload-key", help="Create a payload key for at-rest encryption at its "
                                    "source in SYNCROUTER_PAYLOAD_KEYS.")
        payload_key.add_argument("key_id")
        rotate = actions.add_parser(
            "rotate-payloads", parents=[alias],
            help="Re-encrypt the stored payloads under SYNCROUTER_PAYLOAD_KEY (plain if unset), "
                 "in batches; resumable.")
        rotate.add_argument("--batch-size", type=int, default=None,
                            help="Rows per committed batch (default SYNCROUTER_BATCH_SIZE).")
        rotate.add_argument("--dry-run", action="store_true",
                            help="Only count the rows under each key.")

    def handle(self, *args, subcommand, **options):
        self.verbosity = options["verbosity"]
        code, message = getattr(self, f"do_{subcommand}")(**options)
        if code != Exit.OK:
            raise CommandError(message, returncode=int(code))

    # helpers ----------------------------------------------------------------

    def say(self, text: str) -> None:
        if self.verbosity:
            self.stdout.write(text)

    def alias(self, name: str | None, default: str) -> str:
        alias = name or default
        if settings.DATABASES.get(alias, {}).get("ENGINE", DUMMY) == DUMMY:
            raise CommandError(f"Database alias {alias!r} is not configured in DATABASES.",
                               returncode=Exit.USAGE)
        return alias

    def pair(self, options, source_default: str, target_default: str) -> tuple[str, str]:
        source = self.alias(options.get("source"), source_default)
        target = self.alias(options.get("target"), target_default)
        if source == target:
            raise CommandError(f"--source and --target are both {source!r}.",
                               returncode=Exit.USAGE)
        return source, target

    def reach(self, *aliases: str, timeout: float) -> tuple[Exit, str]:
        for alias in aliases:
            reason = unreachable(alias, timeout)
            if reason:
                return Exit.UNREACHABLE, f"Cannot reach {alias!r}: {reason}"
        return Exit.OK, ""

    def push(self, source: str, target: str, batch_size, timeout: float) -> tuple[Exit, str]:
        """Copy each pending queryset; one the target partly refuses does not stop the next."""
        code, message = self.reach(target, source, timeout=timeout)
        if code:
            return code, message
        flag = sent_flag(conf.node_for_alias(target))
        progress = Progress(self.stdout, f"{source} -> {target}")
        total = CopyResult(0, 0)
        refused = []
        try:
            for queryset in pending(source, flag):
                done = total
                try:
                    result = queryset.copy_to_incoming_transaction(
                        target, batch_size=batch_size,
                        progress=lambda r, done=done: progress.copy(CopyResult(done.copied + r.copied,
                                                                    done.already_present
                                                                    + r.already_present)))
                except CopyRefused as exc:
                    result = exc.result
                    refused.append(str(exc))
                total = CopyResult(total.copied + result.copied,
                                   total.already_present + result.already_present)
        except CopyInterrupted as exc:
            return Exit.UNREACHABLE, str(exc)
        except SyncError as exc:
            return Exit.REFUSED, str(exc)
        finally:
            progress.end()
        self.say(f"{source} -> {target}: {total.copied} copied, "
                 f"{total.already_present} already there.")
        if refused:
            return Exit.REFUSED, "\n".join(refused)
        return Exit.OK, ""

    def replay(self, alias: str, batch_size, allow_own_host: bool) -> tuple[Exit, str]:
        progress = Progress(self.stdout, f"replay on {alias}")
        try:
            messages = IncomingTransaction.objects.using(alias).filter(
                is_consumed=False).deserialize(
                check_hostname=not allow_own_host, batch_size=batch_size,
                progress=lambda counts: progress(sum(counts.values())))
        except ReplayRefused as exc:
            return Exit.USAGE, str(exc)
        finally:
            progress.end()
        counts = messages.counts
        if self.verbosity > 1:
            for message in messages:
                if message.outcome in ATTENTION:
                    self.stdout.write(f"  {message}")
        self.say(f"replay on {alias}: " + (", ".join(
            f"{count} {outcome}" for outcome, count in sorted(counts.items())) or "nothing to do"))
        problems = []
        waiting = sum(counts.get(outcome, 0) for outcome in ATTENTION)
        if waiting:
            problems.append(f"{waiting} transactions on {alias!r} are deferred, in conflict or "
                            "in error; see 'manage.py syncrouter status'.")
        mine = counts.get(ReplayOutcome.SKIPPED) and sum(
            1 for message in messages if message.outcome == ReplayOutcome.SKIPPED
            and message.text == own.SKIPPED)
        if mine:
            name = conf.node_for_alias(alias).name
            problems.append(
                f"{mine} transactions on {alias!r} were left untouched as this node's own: "
                f"their producer is {name!r}, the name of this node. If another node has that "
                "name too (SYNCROUTER_NODES; the default <hostname>-<alias> repeats on laptops "
                "cloned from one image), give each node its own name; --allow-own-host "
                "replays them.")
            logger.warning("%s", problems[-1])
        if problems:
            return Exit.ATTENTION, "\n".join(problems)
        return Exit.OK, ""

    # subcommands ------------------------------------------------------------

    def do_push(self, **options):
        source, target = self.pair(options, conf.local_alias(), "server")
        return self.push(source, target, options["batch_size"], options["timeout"])

    def do_pull(self, **options):
        source, target = self.pair(options, options["source"], conf.local_alias())
        return self.push(source, target, options["batch_size"], options["timeout"])

    def do_replay(self, **options):
        alias = self.alias(options["target"], conf.local_alias())
        return self.replay(alias, options["batch_size"], options["allow_own_host"])

    def do_sync(self, **options):
        source, target = self.pair(options, conf.local_alias(), "server")
        cycles, failures = 0, 0
        while True:
            code, message = self.push(source, target, options["batch_size"], options["timeout"])
            if code in (Exit.OK, Exit.REFUSED):  # what was not refused is there: replay it
                replayed, replay_message = self.replay(target, options["batch_size"],
                                                       options["allow_own_host"])
                if replayed and not code:
                    code, message = replayed, replay_message
                elif replayed:
                    message = f"{message}\n{replay_message}"
            cycles += 1
            if not options["watch"] or cycles == options["max_cycles"]:
                return code, message
            failures = failures + 1 if code == Exit.UNREACHABLE else 0
            wait = min(options["interval"] * 2 ** failures, options["max_backoff"])
            if code:
                self.say(f"cycle {cycles}: {message}; next try in {wait:g}s")
            try:
                time.sleep(wait)
            except KeyboardInterrupt:
                return code, message

    def do_status(self, **options):
        alias = self.alias(options["alias"], conf.local_alias())
        status = node_status(alias)
        self.stdout.write(f"{status.node} ({status.role}, alias {alias!r})")
        self.stdout.write("\nreceived (IncomingTransaction)")
        self.table(
            ("producer", "contiguous", "highest", "gaps", "pending", "deferred", "errors",
             "unforwarded", "last received"),
            [(p.stream.producer, p.stream.contiguous, p.stream.highest,
              ",".join(f"{a}-{b}" if a != b else str(a) for a, b in p.stream.gaps) or "-",
              p.stream.pending, p.stream.deferred, p.stream.errors, p.unforwarded,
              p.last_received.strftime("%Y-%m-%d %H:%M") if p.last_received else "-")
             for p in status.inbox])
        self.stdout.write("\ncaptured here (OutgoingTransaction)")
        self.table(("producer", "highest", "total", "to server", "to middleman"),
                   [(p.producer, p.highest, p.total, p.pending_server, p.pending_middleman)
                    for p in status.outbox])
        if status.refused_here:
            self.stdout.write("\nrefused here (signature, device registry or write rule; the "
                              "replay ones are also counted as errors above)")
            self.table(("producer", "at copy/import", "at replay", "latest reason"),
                       [(p.producer, p.at_entry, p.at_replay, p.last_reason)
                        for p in status.refused_here])
        if status.refused:
            self.stdout.write("\nrefused by the next hop (pending here; each copy or export "
                              "tries them again)")
            self.table(("target", "producer", "sequence", "held back", "last refused"),
                       [(r.target, r.producer, r.sequence, r.held_back,
                         r.last_refused.strftime("%Y-%m-%d %H:%M")) for r in status.refused])
            for r in status.refused:
                self.stdout.write(f"  {r.producer}#{r.sequence}: {r.reason}")
            return Exit.REFUSED, (f"{len(status.refused)} transactions on {alias!r} were refused "
                                  "by the next hop; see above.")
        if status.needs_attention:
            return Exit.ATTENTION, (f"Some transactions on {alias!r} are deferred, in error or "
                                    "refused.")
        return Exit.OK, ""

    def table(self, header: tuple, rows: list[tuple]) -> None:
        if not rows:
            self.stdout.write("  (none)")
            return
        cells = [tuple(str(value) for value in row) for row in [header, *rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        for row in cells:
            self.stdout.write("  " + "  ".join(
                value.ljust(width) if i == 0 else value.rjust(width)
                for i, (value, width) in enumerate(zip(row, widths))))

    def do_export(self, **options):
        source = self.alias(options["source"], conf.local_alias())
        progress = Progress(self.stdout, f"export from {source}")
        code, message = Exit.OK, ""
        try:
            manifest = export_transactions(options["path"], pending(source),
                                           batch_size=options["batch_size"],
                                           mark=options["mark"], progress=progress,
                                           recipient=options["recipient"])
        except ExportRefused as exc:
            manifest, code, message = exc.manifest, Exit.REFUSED, str(exc)
        except OSError as exc:
            return Exit.USAGE, f"Cannot write {options['path']}: {exc}"
        except SyncError as exc:
            return Exit.USAGE, str(exc)
        finally:
            progress.end()
        self.say(f"{options['path']}: {manifest.count} transactions from "
                 f"{len(manifest.producers)} producers (batch {manifest.batch_id})"
                 + (", marked sent." if options["mark"] else "; left pending."))
        return code, message

    def do_import(self, **options):
        target = self.alias(options["target"], conf.local_alias())
        refused = []
        for path in options["paths"]:
            progress = Progress(self.stdout, f"import {path}")
            try:
                result = import_transactions(path, target, batch_size=options["batch_size"],
                                             progress=progress.copy)
            except CopyInterrupted as exc:
                return Exit.UNREACHABLE, str(exc)
            except SyncError as exc:
                refused.append(path)
                self.stderr.write(str(exc))
                continue
            finally:
                progress.end()
            self.say(f"{path}: {result.copied} imported into {target}, "
                     f"{result.already_present} already there.")
        if refused:
            return Exit.REFUSED, (f"{len(refused)} of {len(options['paths'])} files refused "
                                  f"(the reasons are above): {', '.join(refused)}.")
        return Exit.OK, ""

    def do_keys(self, **options):
        action = options["keys_action"]
        if action in ("new-payload-key", "rotate-payloads"):
            return self.payload_keys(**options)
        alias = self.alias(options["alias"], conf.local_alias())
        try:
            if action == "init":
                created, where = keys.create(alias, replace=options["replace"])
                if where.startswith("env:"):
                    self.stdout.write(f"Put this line in the environment variable {where[4:]} "
                                      "(it is the private key: keep it secret):")
                    self.stdout.write(created.dumps())
                else:
                    self.say(f"Key created in {where} (mode 0600).")
                self.show(alias, created.public)
            elif action == "show":
                self.show(alias, keys.require(alias).public)
            elif action == "trust":
                device = devices.trust(alias, options["name"], options["public_key"],
                                       role=options["role"], replace=options["replace"])
                self.say(f"Trusted on {alias}: {device}")
            elif action == "revoke":
                device = devices.revoke(alias, options["name"], options["after"])
                self.say(f"Revoked on {alias}: {device.name}: its transactions after "
                         f"#{device.revoked_after} are refused.")
            else:
                self.table(("name", "role", "fingerprint", "revoked after", "enrolled"),
                           [(d.name, d.role, d.fingerprint[:16],
                             "-" if d.revoked_after is None else d.revoked_after,
                             d.created.strftime("%Y-%m-%d %H:%M"))
                            for d in devices.devices(alias)])
        except SyncError as exc:
            return Exit.USAGE, str(exc)
        return Exit.OK, ""

    def payload_keys(self, **options):

        try:
            if options["keys_action"] == "new-payload-key":
                text, where = atrest.new_key(options["key_id"])
                if where.startswith("env:"):
                    self.stdout.write(f"Put this line in the environment variable {where[4:]} "
                                      "(it is the key: keep it secret, and give it to every "
                                      "node that reads these payloads):")
                    self.stdout.write(text)
                else:
                    self.say(f"Payload key {options['key_id']!r} created in {where} (mode "
                             "0600). Copy it to every node that reads these payloads.")
                return Exit.OK, ""
            alias = self.alias(options["alias"], conf.local_alias())
            if not options["dry_run"]:
                current = atrest.keyring().current
                self.say(f"Re-encrypting the payloads on {alias} under "
                         + (f"key {current!r}" if current else "no key (plain JSON)") + " ...")
                rotated = rotation.rotate(
                    alias, options["batch_size"] or conf.batch_size(),
                    lambda done: self.say(f"  {done.table}: {done.rekeyed} re-encrypted"))
            usage = rotation.usage(alias)
        except SyncError as exc:
            return Exit.USAGE, str(exc)
        for table, counts in usage.items():
            self.say(f"{table}: " + (", ".join(
                f"{count} {'plain' if key is None else f'under key {key!r}'}"
                for key, count in counts.items()) or "empty"))
        if options["dry_run"]:
            return Exit.OK, ""
        problems = [f"{count} rows of {done.table} under key {key!r} were left as they are: "
                    f"{done.reasons[key]}" for done in rotated
                    for key, count in done.unreadable.items()]
        if problems:
            return Exit.ATTENTION, "\n".join(problems)
        return Exit.OK, ""

    def show(self, alias: str, public) -> None:
        node = conf.node_for_alias(alias)
        self.stdout.write(f"node:        {node.name} ({node.role})")
        self.stdout.write(f"public key:  {public.token}")
        self.stdout.write(f"fingerprint: {public.fingerprint}")
        self.stdout.write(f"enrol it on a receiving node with:\n  manage.py syncrouter keys "
                          f"trust {node.name} {public.token} --role {node.role}")
