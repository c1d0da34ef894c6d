// The Disaster Recovery tab: live updates from the event stream, the Actions menu and the
// confirmation dialogs. Everything else is plain HTML forms (they work without this file).
(() => {
  "use strict";

  const $ = (selector, root = document) => root.querySelector(selector);
  // An answer that is not a success never replaces what the page shows.
  htmx.config.noSwap.push("4xx", "5xx");

  // Live: each event of the pair refreshes the live part (one request at a time; events
  // that arrive meanwhile cost one more refresh, not one each) and joins the events list.
  let busy = false;
  let again = false;
  async function refresh() {
    const live = $("#dr-live");
    if (!live) return;
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      do {
        again = false;
        await htmx.ajax("GET", live.dataset.liveUrl, { target: "#dr-live", swap: "innerMorph" });
      } while (again);
    } catch (error) {
      console.warn("tandem: refresh failed", error);
    } finally {
      busy = false;
    }
  }

  // As event_summary in app/ui/pages.py.
  function summary(data) {
    if ("step" in data) return `${data.step} ${data.status ?? ""}`.trim();
    if ("from" in data && "to" in data) return `${data.from} → ${data.to}`;
    return String(data.kind ?? "");
  }

  function showEvent(event) {
    const list = $("#events");
    if (!list) return;
    $(".empty", list)?.remove();
    const item = document.createElement("li");
    const time = document.createElement("time");
    time.dateTime = event.created_at;
    time.textContent = String(event.created_at).slice(11, 19);
    const type = document.createElement("code");
    type.textContent = event.type;
    item.append(time, " ", type, " ", summary(event.data || {}));
    list.prepend(item);
    while (list.children.length > 20) list.lastElementChild.remove();
  }

  // What an event says is shown at once; the refresh that follows brings the rest (the
  // buttons, readiness, deployments) and corrects anything shown here.
  const STATUS_WORDS = {
    "primary-active": (p) => `Primary region active: ${p.dataset.primaryRegion}`,
    "secondary-active": (p) => `Failed over to secondary region: ${p.dataset.secondaryRegion}`,
    "failing-over": () => "Failing over…",
    "failing-back": () => "Failing back…",
  };
  function apply(type, data) {
    if (type === "operation.step_changed") {
      const operation = $("#operation");
      if (operation?.dataset.operationId !== data.operation_id) return;
      const step = $(`[data-step="${CSS.escape(data.step)}"]`, operation);
      if (!step) return;
      step.className = `step status-${data.status}`;
      $(".status", step).textContent = data.status;
    } else if (type === "cluster.state_changed" && data.to in STATUS_WORDS) {
      const indicator = $("#status-indicator");
      if (!indicator) return;
      indicator.textContent = STATUS_WORDS[data.to]($("#panel-dr"));
      indicator.className = `indicator state-${data.to}`;
    }
  }

  document.addEventListener("htmx:sse:after:message", (e) => {
    const message = e.detail?.message;
    if (!message?.event) return;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    apply(event.type, event.data || {});
    showEvent(event);
    refresh();
  });
  // Whatever happened between the page's rendering and the stream's start (or restart).
  document.addEventListener("htmx:sse:after:connection", refresh);
  // Mid-switch, a refresh now and then as well: a stream that silently stalls behind a
  // proxy must not leave the page saying "Failing over…" forever.
  setInterval(() => {
    if ($("#status-indicator")?.textContent.startsWith("Failing")) refresh();
  }, 10_000);

  // The Actions menu (a menu button: arrows, Home/End, Escape, Tab).
  function menuItems() {
    return [...document.querySelectorAll("#actions-menu [role=menuitem]")];
  }
  function openMenu() {
    const menu = $("#actions-menu");
    for (const item of menuItems()) {
      const twin = document.getElementById(`${item.dataset.opens}-button`);
      item.setAttribute("aria-disabled", String(!twin || twin.disabled));
    }
    menu.hidden = false;
    $("#actions-button").setAttribute("aria-expanded", "true");
    (menuItems().find((i) => i.getAttribute("aria-disabled") !== "true") || menuItems()[0]).focus();
  }
  function closeMenu(focusButton) {
    const menu = $("#actions-menu");
    if (!menu || menu.hidden) return;
    menu.hidden = true;
    $("#actions-button").setAttribute("aria-expanded", "false");
    if (focusButton) $("#actions-button").focus();
  }
  document.addEventListener("keydown", (e) => {
    const items = menuItems();
    const at = items.indexOf(document.activeElement);
    if (at < 0) return;
    const moves = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: items.length - 1 };
    if (e.key in moves) {
      e.preventDefault();
      items[(moves[e.key] + items.length) % items.length].focus();
    } else if (e.key === "Escape") {
      e.preventDefault();
      closeMenu(true);
    } else if (e.key === "Tab") {
      closeMenu(false);
    }
  });

  // The confirmation dialogs.
  function dialogState(dialog) {
    const name = $("[data-confirm-name]", dialog).value;
    const forced = $("[data-forced]", dialog)?.checked ?? false;
    const accepted = $("[data-accept]", dialog)?.checked ?? false;
    const forcedOnly = $("[data-forced-only]", dialog);
    if (forcedOnly) forcedOnly.hidden = !forced;
    if ($("[data-accept]", dialog)) $("[data-accept]", dialog).required = forced;
    $("[data-confirm]", dialog).disabled =
      name !== dialog.dataset.expect || (forced && !accepted);
  }
  function loadPreview(dialog) {
    if (!$("#panel-dr")) return;  // only a pair's dialogs have a dry run
    const kind = dialog.dataset.kind;
    const forced = $("[data-forced]", dialog).checked;
    const url = `/ui/pairs/${$("#panel-dr").dataset.pairId}/preview?kind=${kind}&forced=${forced}`;
    htmx
      .ajax("GET", url, { target: `#preview-${kind}`, swap: "innerHTML" })
      .then(() => {
        const lag = $(`#preview-${kind} [data-lag-value]`);
        if (lag) $("[data-lag]", dialog).textContent = lag.textContent;
      })
      .catch((error) => console.warn("tandem: dry run failed", error));
  }
  function openDialog(kind, opener) {
    const dialog = document.getElementById(`dialog-${kind}`);
    if (!dialog) return;
    closeMenu(false);
    dialog.returnFocusTo = opener.getAttribute("role") === "menuitem" ? "actions-button" : opener.id;
    dialog.showModal();
    $("[data-confirm-name]", dialog).focus();
    dialogState(dialog);
    loadPreview(dialog);
  }

  document.addEventListener("click", (e) => {
    const target = e.target instanceof Element ? e.target : null;
    if (!target) return;
    if (target.closest("#actions-button")) {
      $("#actions-menu").hidden ? openMenu() : closeMenu(true);
      return;
    }
    const opener = target.closest("[data-opens]");
    if (opener) {
      if (opener.disabled || opener.getAttribute("aria-disabled") === "true") return;
      openDialog(opener.dataset.opens, opener);
      return;
    }
    const close = target.closest("[data-close]");
    if (close) {
      close.closest("dialog").close();
      return;
    }
    if (!target.closest("#actions-menu")) closeMenu(false);
  });
  document.addEventListener("input", (e) => {
    const dialog = e.target.closest?.("dialog");
    if (dialog) dialogState(dialog);
  });
  document.addEventListener("change", (e) => {
    const dialog = e.target.closest?.("dialog");
    if (!dialog) return;
    dialogState(dialog);
    if (e.target.matches("[data-forced]")) loadPreview(dialog);
  });
  // Focus goes back where it came from when a dialog closes (Escape included).
  document.addEventListener(
    "close",
    (e) => {
      if (!(e.target instanceof HTMLDialogElement)) return;
      const back = document.getElementById(e.target.returnFocusTo || "actions-button");
      (back && !back.disabled ? back : $("#status-indicator"))?.focus();
    },
    true,
  );
})();
