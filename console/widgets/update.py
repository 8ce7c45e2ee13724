"""The server update wizard, in the order of a remediation wizard: targets and catalog →
options and window → pre-flight (what will change, per host and component) → typed
confirmation → create, after which the wizard becomes the job's live monitor.

Every selector is created with its options and a valid selection (or an explicit
"choose" entry), and every message appears on the line under the buttons of its step."""

from __future__ import annotations

import datetime as dt
import html
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w

from console.models.update_wizard import VM_PLANS, Step, UpdateWizard
from console.widgets.common import STYLE, Status, dropdown, guarded, html_table, set_options
from executor.jobparams import BlockerDefault

OTHER_URL = "__other__"
BLOCKER_LABELS = {
    "ask": "ask me (the job pauses for a decision)",
    "power_off_vm": "power blocking VMs off and on",
    "skip_host": "skip hosts with blocking VMs",
}
STEPS = [
    (Step.CLUSTER, "1 Targets"),
    (Step.OPTIONS, "2 Options & window"),
    (Step.PREFLIGHT, "3 Pre-flight"),
    (Step.CONFIRM, "4 Confirm"),
    (Step.DONE, "5 Live"),
]


class UpdateWizardView(w.VBox):
    def __init__(self, wizard: UpdateWizard, monitor: Callable[..., w.Widget] | None = None) -> None:
        self.wz = wizard
        self._monitor = monitor
        self.monitor_view: w.Widget | None = None
        self.status = Status()
        self.title = w.HTML()
        self._build_targets()
        self._build_options()
        self._build_review()
        self._build_vm_fixes()
        # after Start update: the pre-flight's decisions go out when the job pauses for them
        self.plan_status = Status()
        self.plan_status.add_class("rp-vm-plan-status")
        self.body = w.VBox()
        wizard.on_change(self.render)
        super().__init__([self.title, self.body])
        self.add_class("rp-wizard")
        # the catalogs (of every site until a cluster is chosen) and "other URL…", never a blank box
        guarded(self.status, self._cluster_changed)()
        self.render()

    def _build_targets(self) -> None:
        """Step 1: the cluster, its hosts and the catalog."""
        self.cluster = dropdown(
            [(c["name"], c["id"]) for c in self.wz.clusters],
            description="cluster",
            placeholder=None if len(self.wz.clusters) == 1 else "— choose a cluster —",
        )
        self.cluster.add_class("rp-cluster-pick")
        self.pick_hosts = w.SelectMultiple(description="hosts", rows=5, layout=w.Layout(width="50%"))
        self.hosts_hint = w.HTML("<i>none selected = every host of the cluster, in order</i>")
        self.catalog_pick = dropdown([], description="catalog", layout=w.Layout(width="70%"))
        self.catalog_pick.add_class("rp-catalog-pick")
        self.catalog = w.Text(
            description="catalog URL", placeholder="https://…/Catalog.xml.gz", layout=w.Layout(width="70%")
        )
        self.next1 = w.Button(description="Next: options", button_style="primary")
        self.next1.on_click(guarded(self.status, lambda _: self._choose()))
        self.cluster.observe(lambda ch: guarded(self.status, self._cluster_changed)(), names="value")
        self.catalog_pick.observe(lambda ch: self._catalog_changed(), names="value")

    def _build_options(self) -> None:
        """Step 2: the options within the policy, and the maintenance window."""
        self.components = w.Text(description="components", placeholder="empty = every applicable update")
        self.hosts = w.SelectMultiple(description="hosts", rows=5)  # kept for scripts: the step-1 choice
        self.parallel = w.BoundedIntText(value=1, min=1, max=16, description="hosts at once")
        self.budget = w.BoundedIntText(value=0, min=0, max=64, description="fail budget")
        self.blocker_default = dropdown(
            [(BLOCKER_LABELS.get(b.value, b.value), b.value) for b in BlockerDefault],
            description="blockers",
            layout=w.Layout(width="60%"),
        )
        self.stage = w.Checkbox(
            value=True, description="stage firmware while the host serves VMs (one reboot)"
        )
        self.stage_ahead = w.Checkbox(
            value=True, description="stage the next host while the current one is updated"
        )
        self.esxi_version = w.Text(description="ESXi version", placeholder="optional, e.g. 8.0.3")
        self.esxi_depot = w.Text(description="ESXi depot", placeholder="optional depot URL")
        self.window = dropdown(
            [],
            description="window",
            placeholder="none (not allowed for high-risk work)",
            layout=w.Layout(width="70%"),
        )
        self.window.add_class("rp-window-pick")
        start = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
        self.win_title = w.Text(description="title", placeholder="e.g. firmware prod-a")
        self.win_starts = w.Text(description="starts (UTC)", value=start.isoformat())
        self.win_ends = w.Text(description="ends (UTC)", value=(start + dt.timedelta(hours=4)).isoformat())
        self.win_request = w.Button(description="Request this window", icon="calendar")
        self.win_status = Status()
        self.win_request.on_click(guarded(self.win_status, lambda _: self._request_window()))
        self.description = w.Text(description="note")
        self.next2 = w.Button(description="Next: pre-flight", button_style="primary")
        self.next2.on_click(guarded(self.status, lambda _: self._preflight()))

    def _build_review(self) -> None:
        """Steps 3 and 4: the report, the confirmation and the start."""
        self.report = w.HTML()
        self.typed = w.Text(description="type cluster", placeholder="the cluster's name, to confirm")
        self.confirm = w.Button(description="Confirm", button_style="warning")
        self.confirm.on_click(guarded(self.status, lambda _: self._confirm()))
        self.create = w.Button(description="Start update", button_style="danger")
        self.create.on_click(guarded(self.status, lambda _: self._create()))
        self.export = w.Button(description="Export report", icon="download")
        self.export.on_click(guarded(self.status, lambda _: self._export()))
        self.back = w.Button(description="Back")
        self.back.on_click(guarded(self.status, lambda _: self.wz.back()))

    def _build_vm_fixes(self) -> None:
        """Step 3: a blocking VM's fix before the job starts (confirmed, its result in words), or
        a vm_operation job at once (operators and above), followed live."""
        self.vm_pick = dropdown([], description="VM", layout=w.Layout(width="55%"))
        self.vm_pick.add_class("rp-vm-fix-pick")
        self.vm_plan = dropdown(
            [(label, key) for key, label in VM_PLANS.items() if key != "ask"] + [(VM_PLANS["ask"], "ask")],
            description="do",
            layout=w.Layout(width="55%"),
        )
        self.vm_plan.add_class("rp-vm-fix-plan")
        self.vm_apply = w.Button(description="Apply…", icon="wrench")
        self.vm_apply.add_class("rp-vm-fix-apply")
        self.vm_confirm_text = w.HTML()
        self.vm_yes = w.Button(description="Yes, do it", button_style="warning")
        self.vm_yes.add_class("rp-vm-fix-yes")
        self.vm_no = w.Button(description="No")
        self.vm_confirm = w.HBox([self.vm_confirm_text, self.vm_yes, self.vm_no])
        self.vm_confirm.layout.display = "none"
        self.vm_status = Status()
        self.vm_status.add_class("rp-vm-fix-status")
        self.vm_apply.on_click(guarded(self.vm_status, lambda _: self._ask_vm_fix()))
        self.vm_yes.on_click(guarded(self.vm_status, lambda _: self._do_vm_fix()))
        self.vm_no.on_click(lambda _: self._cancel_vm_fix())
        # ... or fixed at once: a vm_operation job (power off / disconnect media), confirmed,
        # followed live, the pre-flight run again when it completes (operators and above)
        # one Layout each: a button is hidden through its layout's display
        self.vm_off_now = w.Button(
            description="Power off now",
            icon="power-off",
            button_style="danger",
            layout=w.Layout(width="auto"),
        )
        self.vm_off_now.add_class("rp-vm-fix-power-off")
        self.vm_media_now = w.Button(
            description="Disconnect media now", icon="eject", layout=w.Layout(width="auto")
        )
        self.vm_media_now.add_class("rp-vm-fix-disconnect")
        self.vm_shutdown_now = w.Button(
            description="Shut down guest now",
            icon="stop",
            button_style="warning",
            layout=w.Layout(width="auto"),
        )
        self.vm_shutdown_now.add_class("rp-vm-fix-shutdown")
        self.vm_shutdown_now.on_click(
            guarded(self.vm_status, lambda _: self._ask_vm_fix_now("shutdown_guest"))
        )
        self.vm_off_now.on_click(guarded(self.vm_status, lambda _: self._ask_vm_fix_now("power_off")))
        self.vm_media_now.on_click(
            guarded(self.vm_status, lambda _: self._ask_vm_fix_now("disconnect_media"))
        )
        self.vm_pick.observe(lambda ch: self._show_fix_now(), names="value")
        self._now_action: str | None = None
        self.vm_fix_monitor: w.Widget | None = None
        self._vm_fix_monitor_of: str | None = None  # the VM whose fix job the monitor follows

    # -- step 1 -----------------------------------------------------------------------------
    def _cluster_changed(self) -> None:
        cid = self.cluster.value
        hosts = self.wz.cluster_hosts(cid) if cid else []
        self.pick_hosts.options = [(h["name"], h["id"]) for h in hosts]
        site = next((c.get("site_id") for c in self.wz.clusters if c["id"] == cid), None)
        cats = [c for c in self.wz.catalogs if not site or c.get("site_id") == site]
        opts = [
            (f"{c['name']} — {c['url']}" + (f" (v{c['version']})" if c.get("version") else ""), c["url"])
            for c in cats
        ] + [("other URL…", OTHER_URL)]
        set_options(self.catalog_pick, opts)
        self._catalog_changed()

    def _catalog_changed(self) -> None:
        v = self.catalog_pick.value
        if v and v != OTHER_URL:
            self.catalog.value = v

    def _choose(self) -> None:
        if not self.cluster.value:
            self.status.error("choose a cluster first")
            return
        self.wz.choose_cluster(
            self.cluster.value, host_ids=list(self.pick_hosts.value), catalog_url=self.catalog.value.strip()
        )
        self.status.clear()

    # -- step 2 -----------------------------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        return {
            "catalog_url": self.catalog.value,
            "components": self.components.value,
            "host_ids": list(self.hosts.value),
            "max_parallel_hosts": self.parallel.value,
            "failure_budget": self.budget.value,
            "blocker_default": self.blocker_default.value,
            "stage_firmware": self.stage.value,
            "stage_ahead": self.stage_ahead.value,
            "esxi_target_version": self.esxi_version.value,
            "esxi_depot_url": self.esxi_depot.value,
            "maintenance_window_id": self.window.value,
            "description": self.description.value,
        }

    def _request_window(self) -> None:
        from console.models.windows import WindowBoard

        wz = self.wz
        assert wz.cluster is not None
        s, e = WindowBoard.check_request(
            self.win_title.value or f"firmware {wz.cluster['name']}",
            self.win_starts.value,
            self.win_ends.value,
        )
        res = wz.api.create_window(
            site_id=wz.cluster["site_id"],
            cluster_id=wz.cluster["id"],
            title=(self.win_title.value or f"firmware {wz.cluster['name']}").strip(),
            starts_at=s,
            ends_at=e,
            reason="requested from the server update wizard",
        )
        self.win_status.ok(
            f"window requested ({str(res.get('window_id'))[:8]}): an approver other than you must "
            "approve it (Windows screen); pick it here once approved"
        )

    def _preflight(self) -> None:
        self.wz.set_options(**self._options())
        rep = self.wz.run_preflight()
        if not rep.ok:
            self.status.warn("the pre-flight found blocking problems (red rows): fix them, then run it again")
        elif rep.nothing_to_do:
            self.status.warn("nothing to do: every host is already at the catalog version")
        else:
            self.status.ok(
                "pre-flight passed: review what will change, then type the cluster name to confirm"
            )

    def _export(self) -> None:
        """JSON, CSV and Markdown side by side, in RACKPILOT_CONSOLE_EXPORT_DIR or the notebook's folder."""
        rep = self.wz.report
        if rep is None:
            self.status.warn("run the pre-flight step first")
            return
        base = (
            Path(os.environ.get("RACKPILOT_CONSOLE_EXPORT_DIR", ".")) / f"preflight-{rep.cluster.get('name')}"
        )
        try:
            paths = [rep.export(base.with_suffix(f".{fmt}"), fmt) for fmt in ("json", "csv", "md")]
        except OSError as exc:
            self.status.error(f"could not write the report: {exc.strerror}")
            return
        self.status.ok("pre-flight report written: " + ", ".join(str(p) for p in paths))

    def _picked_blocker(self) -> dict[str, Any] | None:
        rep = self.wz.report
        return next((v for v in (rep.vm_blockers if rep else []) if v["vm_id"] == self.vm_pick.value), None)

    def _show_fix_now(self) -> None:
        """The "now" buttons the picked VM's blockers allow (none for a viewer)."""
        vm = self._picked_blocker()
        offered = ((vm or {}).get("fix_now") or []) if self.wz.may_fix_now else []
        self.vm_off_now.layout.display = None if "power_off" in offered else "none"
        self.vm_media_now.layout.display = None if "disconnect_media" in offered else "none"
        self.vm_shutdown_now.layout.display = None if "shutdown_guest" in offered else "none"

    def _ask_vm_fix_now(self, action: str) -> None:
        vm = self._picked_blocker()
        if vm is None:
            self.vm_status.warn("choose a blocking VM first")
            return
        question = {
            "power_off": f"Power off {vm['vm']} now? Its workload stops: a hard power-off, the guest "
            "is not asked to shut down.",
            "shutdown_guest": f"Shut down {vm['vm']}'s guest OS now? Its workload stops; VMware Tools "
            "must run in the guest (else power it off).",
            "disconnect_media": f"Disconnect {vm['vm']}'s CD-ROM/floppy media now (and at its next "
            "power-on)? The guest loses the mounted image.",
        }[action]
        self._now_action = action
        self.vm_confirm_text.value = f"<b>{html.escape(question)}</b>"
        self.vm_confirm.layout.display = None
        self.vm_status.clear()

    def _do_vm_fix_now(self, action: str) -> None:
        words = self.wz.fix_vm_now(self.vm_pick.value, action)
        self.vm_status.ok(words)
        fx = self.wz.vm_fix_jobs[self.vm_pick.value]
        self._vm_fix_monitor_of = self.vm_pick.value
        if self._monitor is not None:
            try:
                self.vm_fix_monitor = self._monitor(fx["job_id"])
            except Exception as exc:  # noqa: BLE001 - shown on the line, the job exists either way
                self.vm_status.error(f"the fix job was created but its monitor could not open: {exc}")
            else:
                # the monitor follows the job over Realtime; each change reads the fixes' ends
                mon = getattr(getattr(self.vm_fix_monitor, "view", self.vm_fix_monitor), "m", None)
                if mon is not None:
                    mon.on_change(guarded(self.vm_status, self._vm_fix_progress))
        self._vm_fix_progress(said=words)
        self.render()

    def _vm_fix_progress(self, said: str = "") -> None:
        """What the fix jobs did since the last look, on the line under the buttons (after
        ``said``, the line it replaces, when given)."""
        words = self.wz.vm_fix_progress()
        if not words:
            return
        failed = any(" the fix failed" in x or " the fix cancelled" in x for x in words)
        (self.vm_status.error if failed else self.vm_status.ok)("; ".join([said, *words] if said else words))

    def _ask_vm_fix(self) -> None:
        self._now_action = None
        rep = self.wz.report
        vm = next((v for v in (rep.vm_blockers if rep else []) if v["vm_id"] == self.vm_pick.value), None)
        if vm is None:
            self.vm_status.warn("choose a blocking VM first")
            return
        plan = self.vm_plan.value
        question = {
            "power_off_vm": f"Power off {vm['vm']} when the update reaches {vm['host']} (and back on after)?",
            "skip_host": f"Leave {vm['host']} out of this update because of {vm['vm']}?",
            "ask": f"Let the job pause and ask you about {vm['vm']}?",
        }[plan]
        self.vm_confirm_text.value = f"<b>{html.escape(question)}</b>"
        self.vm_confirm.layout.display = None
        self.vm_status.clear()

    def _cancel_vm_fix(self) -> None:
        self.vm_confirm.layout.display = "none"
        self._now_action = None
        self.vm_status.warn("nothing changed")

    def _do_vm_fix(self) -> None:
        self.vm_confirm.layout.display = "none"
        if self._now_action is not None:
            action, self._now_action = self._now_action, None
            self._do_vm_fix_now(action)
            return
        words = self.wz.plan_vm(self.vm_pick.value, self.vm_plan.value)
        self.vm_status.ok(words)

    def _apply_vm_plans(self) -> None:
        words = self.wz.apply_vm_plans()
        if words:
            self.plan_status.ok(words)

    def _confirm(self) -> None:
        self.wz.confirm(self.typed.value)
        self.status.ok("confirmed: press Start update")

    def _create(self) -> None:
        res = self.wz.create()
        self.status.ok(f"job {str(res['job_id'])[:8]} created ({res['status']}): following it live below")

    # -- drawing ------------------------------------------------------------------------------
    def _stepper(self) -> str:
        cur = [s for s, _ in STEPS].index(self.wz.step)
        parts = []
        for i, (_, label) in enumerate(STEPS):
            style = (
                "font-weight:bold;color:#1f4e8c"
                if i == cur
                else ("color:#176317" if i < cur else "color:#888")
            )
            parts.append(
                f"<span class='rp-step{' rp-step-current' if i == cur else ''}' style='{style}'>"
                f"{html.escape(label)}</span>"
            )
        return f"{STYLE}<h4>Server update</h4><div class='rp-stepper'>{' › '.join(parts)}</div>"

    def render(self) -> None:
        wz = self.wz
        self.title.value = self._stepper()
        if wz.step == Step.CLUSTER:
            self.body.children = [
                self.cluster,
                w.HBox([self.pick_hosts, self.hosts_hint]),
                self.catalog_pick,
                self.catalog,
                self.next1,
                self.status,
            ]
        elif wz.step == Step.OPTIONS:
            self._render_options()
        elif wz.step in (Step.PREFLIGHT, Step.CONFIRM):
            self._render_preflight()
        else:
            self._render_done()

    def _render_options(self) -> None:
        wz = self.wz
        assert wz.cluster is not None
        self.hosts.options = [(h["name"], h["id"]) for h in wz.hosts]
        self.hosts.value = tuple(
            h for h in wz.options.get("host_ids") or [] if h in {x["id"] for x in wz.hosts}
        )
        if wz.options.get("catalog_url"):
            self.catalog.value = wz.options["catalog_url"]
        cap = self._policy_cap()
        self.parallel.max = cap or 16
        set_options(
            self.window,
            [
                (f"{x['title']} {str(x['starts_at'])[:16]} → {str(x['ends_at'])[:16]} UTC", x["id"])
                for x in wz.windows
            ],
            value=wz.options.get("maintenance_window_id"),
            placeholder="none (not allowed for high-risk work)",
        )
        picked = [h["name"] for h in wz.hosts if h["id"] in set(wz.options.get("host_ids") or [])]
        summary = (
            f"{STYLE}<div class='rp-summary'>cluster <b>{html.escape(wz.cluster['name'])}</b>, "
            f"{html.escape(', '.join(picked)) if picked else f'all {len(wz.hosts)} host(s)'}; catalog "
            f"<code>{html.escape(wz.options.get('catalog_url') or '—')}</code></div>"
        )
        self.body.children = [
            w.HTML(summary),
            self.components,
            w.HBox([self.parallel, self.budget]),
            w.HTML(
                f"<i>the safety policy allows at most {cap} host(s) out of service at once</i>" if cap else ""
            ),
            self.blocker_default,
            w.HBox([self.stage, self.stage_ahead]),
            w.HBox([self.esxi_version, self.esxi_depot]),
            w.HTML("<b>Maintenance window</b>"),
            self.window,
            w.HTML("<i>no approved window yet? request one:</i>") if not wz.windows else w.HTML(""),
            w.HBox([self.win_title, self.win_starts, self.win_ends]),
            self.win_request,
            self.win_status,
            self.description,
            w.HBox([self.back, self.next2]),
            self.status,
        ]

    def _policy_cap(self) -> int | None:
        try:
            pol = {p["job_type"]: p for p in self.wz.api.safety_policies()}.get(
                "rolling_cluster_update"
            ) or {}
        except Exception:  # noqa: BLE001 - the cap is shown for help; the control plane enforces it
            return None
        cap = pol.get("max_hosts_out_per_cluster")
        return int(cap) if cap else None

    def _render_preflight(self) -> None:
        wz = self.wz
        rep = wz.report
        assert rep is not None
        verdict = "blocked" if not rep.ok else "nothing to do" if rep.nothing_to_do else "ready"
        cls = {"blocked": "rp-error", "nothing to do": "rp-warn", "ready": "rp-ok"}[verdict]
        checks = [{"check": c.name, "status": c.status, "detail": c.detail} for c in rep.checks]
        changes = [
            {**c, "change": f"{c['installed']} → {c['target']}", "reboot": "yes" if c["reboot"] else ""}
            for c in rep.changes
        ]
        vmb = [{**v, "reasons": ", ".join(v["reasons"])} for v in rep.vm_blockers]
        self.report.value = (
            f"{STYLE}<div class='rp-verdict {cls}' style='font-size:14px'><b>verdict: {verdict}</b>"
            + (f" — at most {rep.hosts_out_bound} host(s) out at once" if rep.hosts_out_bound else "")
            + "</div>"
            + "<h5>What will change</h5>"
            + html_table(
                changes,
                ["host", "component", "change", "criticality", "reboot"],
                css="rp-changes",
                empty="nothing will change: no component is behind the catalog",
            )
            + (
                f"<div class='rp-compliant rp-ok'>already compliant, will be skipped: "
                f"{html.escape(', '.join(rep.compliant_hosts))}</div>"
                if rep.compliant_hosts
                else ""
            )
            + "<h5>Hosts</h5>"
            + html_table(
                rep.host_gates,
                ["host", "server", "connection", "maintenance", "power", "health", "verdict", "why"],
                css="rp-hostgates",
                row_class=lambda r: "rp-" + r["gate"],
            )
            + "<h5>VMs that would block maintenance mode</h5>"
            + html_table(vmb, ["vm", "host", "reasons", "fix"], css="rp-vmblockers", empty="no VM blockers")
            + "<h5>Checks</h5>"
            + html_table(
                checks,
                ["check", "status", "detail"],
                css="rp-preflight",
                row_class=lambda r: "rp-" + r["status"],
            )
        )
        tail = [self.typed, self.confirm] if wz.step == Step.PREFLIGHT else [self.create]
        fixes: list[w.Widget] = []
        if rep.vm_blockers:
            set_options(
                self.vm_pick,
                [
                    (f"{v['vm']} on {v['host']} ({', '.join(v['reasons'])})", v["vm_id"])
                    for v in rep.vm_blockers
                ],
            )
            planned = [
                f"{v['vm']}: {VM_PLANS[wz.vm_plans[v['vm_id']]]}"
                for v in rep.vm_blockers
                if v["vm_id"] in wz.vm_plans
            ]
            self._show_fix_now()
            fixes = [
                w.HTML("<b>Fix a blocking VM before the job starts</b>"),
                w.HBox([self.vm_pick, self.vm_plan, self.vm_apply]),
                w.HBox([self.vm_media_now, self.vm_shutdown_now, self.vm_off_now]),
                self.vm_confirm,
                self.vm_status,
                w.HTML(
                    "<div class='rp-vm-plans'>decided: " + html.escape("; ".join(planned)) + "</div>"
                    if planned
                    else ""
                ),
            ]
        elif wz.vm_fix_jobs:
            fixes = [self.vm_status]  # the last fix cleared the last blocker: say so
        # the fix job's monitor stays while it runs, and when it failed (its log says why);
        # once it completed, the line above says so and the pre-flight has run again
        followed = wz.vm_fix_jobs.get(self._vm_fix_monitor_of or "")
        if self.vm_fix_monitor is not None and followed and followed["status"] != "completed":
            fixes.append(self.vm_fix_monitor)
        self.body.children = [
            self.report,
            *fixes,
            w.HBox([self.back, self.export, *tail]),
            self.status,
        ]

    def _render_done(self) -> None:
        jid = str((self.wz.result or {}).get("job_id") or "")
        if self.monitor_view is None and self._monitor is not None and jid:
            try:
                self.monitor_view = self._monitor(jid)
            except Exception as exc:  # noqa: BLE001 - shown on the line, the job exists either way
                self.status.error(f"the job was created but its monitor could not open: {exc}")
            else:
                # the monitor follows the job over Realtime: when it pauses for a VM decided
                # in the pre-flight, that decision goes out through resolve-blockers
                mon = getattr(getattr(self.monitor_view, "view", self.monitor_view), "m", None)
                if mon is not None and self.wz.vm_plans:

                    def paused_for_blockers() -> None:
                        job = getattr(mon, "job", None) or {}
                        if (job.get("status"), job.get("pause_reason")) == ("paused", "blockers"):
                            self._apply_vm_plans()

                    mon.on_change(guarded(self.plan_status, paused_for_blockers))
                    guarded(self.plan_status, self._apply_vm_plans)()
        self.body.children = (
            [self.status, self.plan_status, self.monitor_view]
            if self.monitor_view is not None
            else [
                self.status,
                w.HTML(
                    f"created job <code>{html.escape(jid)}</code>: follow it with "
                    f"<code>console.job('{html.escape(jid[:8])}')</code>"
                ),
            ]
        )
