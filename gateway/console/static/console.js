// The ragstream console: sign in with a token, ask through the OpenAI-compatible API (streamed), show the
// answer as it arrives and its citations (document, version, chunk); the pages (documents, dead letters,
// generations, eval reports, review queue) read /v1/console/* with the same credential. Everything shown
// is set as text, never as HTML; plots are the server's SVG files shown as images (blob URLs), so nothing
// in them runs. The token lives in sessionStorage (this tab) and goes only to this origin.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "ragstream.token";

function token() { return sessionStorage.getItem(KEY) || ""; }

let roles = { operator: false, reviewer: false };

function show(signedIn, who) {
  $("signin").hidden = signedIn;
  $("ask").hidden = !signedIn;
  const tabs = $("tabs");
  if (tabs) tabs.hidden = !signedIn;
  $("who").textContent = signedIn ? who : "";
  if (!signedIn && document.querySelectorAll) {
    for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== "ask";
    $("ask").hidden = true;
  }
}

function errorText(body, status) {
  const e = (body && body.error) || {};
  const cid = e.correlation_id ? ` (correlation ${e.correlation_id})` : "";
  return `${status || ""} ${e.code || "error"}: ${e.message || "request failed"}${cid}`.trim();
}

async function signIn(t) {
  const r = await fetch("/v1/models", { headers: { Authorization: `Bearer ${t}` } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(errorText(body, r.status));
  const tenant = (body.data && body.data[0] && body.data[0].owned_by) || "";
  sessionStorage.setItem(KEY, t);
  show(true, `tenant ${tenant}`);
  api("/v1/console/me").then((me) => {
    roles = me;
    $("who").textContent = `tenant ${me.tenant} - ${me.subject}` +
      (me.operator ? " - operator" : "") + (me.reviewer ? " - reviewer" : "");
  }).catch(() => {});
}

function renderCitations(citations) {
  const list = $("citations");
  list.replaceChildren();
  for (const c of citations || []) {
    const li = document.createElement("li");
    li.className = "citation";
    li.textContent = `[${c.citation_id}] ${c.title || c.document_id} - ${c.document_id}` +
      ` @ ${c.source_version} - chunk ${c.chunk_id}`;
    list.append(li);
  }
}

async function ask(question, requestClass) {
  $("answer").textContent = "";
  $("ask-error").textContent = "";
  $("meta").textContent = "";
  renderCitations([]);
  const r = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { Authorization: `Bearer ${token()}`, "Content-Type": "application/json", "X-Request-Class": requestClass },
    body: JSON.stringify({ model: "ragstream", stream: true, messages: [{ role: "user", content: question }] }),
  });
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    if (r.status === 401) { sessionStorage.removeItem(KEY); show(false); }
    throw new Error(errorText(body, r.status));
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(errorText(chunk));
      const choice = (chunk.choices || [])[0] || {};
      const delta = choice.delta || {};
      if (delta.content) $("answer").textContent += delta.content;
      if (choice.finish_reason) {
        renderCitations(chunk.citations);
        const u = chunk.usage || {};
        const x = chunk.ragstream || {};
        $("meta").textContent = `query ${x.query_id || ""} - ${u.prompt_tokens || 0} prompt / ` +
          `${u.completion_tokens || 0} completion tokens` + (x.abstained ? " - abstained" : "");
      }
    }
  }
}

// --- pages ------------------------------------------------------------------------------------------------
async function api(path, method = "GET", body = undefined) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!r.ok) {
    const b = await r.json().catch(() => ({}));
    const e = b.error || {};
    throw new Error(`${r.status} ${e.code || "error"}: ${e.message || "request failed"}` +
      (e.correlation_id ? ` (correlation ${e.correlation_id})` : ""));
  }
  return r.json();
}

function node(tag, text, cls) {
  const n = document.createElement(tag);
  if (text !== undefined && text !== null) n.textContent = String(text);
  if (cls) n.className = cls;
  return n;
}

function table(columns, rows) {
  if (!rows.length) return node("p", "Nothing to show.", "empty");
  const t = node("table");
  const head = node("tr");
  for (const [label] of columns) head.append(node("th", label));
  t.append(head);
  for (const row of rows) {
    const tr = node("tr");
    for (const [, cell] of columns) {
      const v = cell(row);
      const td = node("td");
      if (v instanceof Node) td.append(v); else td.textContent = v === null || v === undefined ? "" : String(v);
      tr.append(td);
    }
    t.append(tr);
  }
  return t;
}

function action(label, run, cls = "op") {
  const b = node("button", label, cls);
  b.type = "button";
  b.addEventListener("click", () => {
    b.disabled = true;
    run().then(() => loadPage(current)).catch((e) => { $("page-error").textContent = e.message; b.disabled = false; });
  });
  return b;
}

const ago = (s) => s === null || s === undefined ? "" : s < 120 ? `${Math.round(s)} s ago` :
  s < 7200 ? `${Math.round(s / 60)} min ago` : s < 172800 ? `${Math.round(s / 3600)} h ago` : `${Math.round(s / 86400)} d ago`;
const num = (v) => typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : String(v);

const pages = {
  async documents(root) {
    const { documents } = await api("/v1/console/documents");
    root.append(table([
      ["Document", (d) => d.title ? `${d.title} (${d.document_id})` : d.document_id],
      ["Source version", (d) => d.source_version],
      ["Chunks", (d) => d.chunk_count],
      ["Updated", (d) => `${d.indexed_at || ""} (${ago(d.age_s)})`],
      ["Indexing lag", (d) => d.indexing_lag_s === null ? "" : `${d.indexing_lag_s} s`],
      ["Lineage", (d) => `gen ${d.generation} - ${d.normalizer_version} - policy ${d.policy_hash} - ${d.embedding_model}`],
      ["ACL", (d) => `groups: ${d.acl.groups.join(", ") || "none"}; users: ${d.acl.principals}`],
    ], documents));
  },
  async "dead-letters"(root) {
    const { dead_letters: rows, operator } = await api("/v1/console/dead-letters");
    root.append(table([
      ["Failed", (d) => d.failed_at], ["Stage", (d) => d.stage], ["Reason", (d) => d.reason],
      ["Error", (d) => d.error_class], ["Topic", (d) => d.topic],
      ["", (d) => operator && d.replayable ? action("Replay", () =>
        api(`/v1/console/dead-letters/${encodeURIComponent(d.dead_letter_id)}/replay`, "POST")) : ""],
    ], rows));
  },
  async generations(root) {
    const { generations: rows, operator } = await api("/v1/console/generations");
    $("rollback").hidden = !operator;
    root.append(table([
      ["Generation", (g) => g.name], ["Status", (g) => g.status], ["Created", (g) => g.created_at],
      ["Model / policy", (g) => `${g.embedding_model} - ${g.policy_hash}`],
      ["Evaluations", (g) => g.evals.map((e) => `${e.kind} ${e.at || ""}: ` + e.results.map((r) =>
        `${r.set} ${r.passed ? "passed" : "failed"} ${Object.entries(r.metrics).map(([k, v]) => `${k}=${num(v)}`).join(" ")}`
      ).join("; ")).join(" | ") || "none"],
      ["", (g) => operator && g.status !== "live" && g.status !== "retired" && g.ready_at ? action("Promote",
        () => api(`/v1/console/generations/${encodeURIComponent(g.name)}/promote`, "POST")) : ""],
    ], rows));
  },
  async evals(root) {
    const { runs } = await api("/v1/console/evals");
    if (!runs.length) root.append(node("p", "No eval runs of this tenant.", "empty"));
    for (const run of runs) {
      const card = node("div", undefined, "card");
      card.append(node("h3", `${run.set} - ${run.run_id}`));
      card.append(node("p", `${run.passed ? "passed" : "failed"} - ${run.questions} questions - generation ` +
        `${run.generation || "live"} - ${run.finished_at || ""}`, run.passed ? "ok" : "bad"));
      card.append(table([["Metric", (m) => m[0]], ["Value", (m) => num(m[1])]], Object.entries(run.metrics)));
      const plots = node("div", undefined, "plots");
      for (const name of run.plots) {
        const img = node("img");
        img.alt = `${name} plot`;
        plots.append(img);
        fetch(`/v1/console/evals/${run.folder}/plots/${name}.svg`, { headers: { Authorization: `Bearer ${token()}` } })
          .then((r) => r.ok ? r.blob() : null).then((b) => { if (b) img.src = URL.createObjectURL(b); });
      }
      card.append(plots);
      root.append(card);
    }
  },
  async reviews(root) {
    const { reviews } = await api("/v1/console/reviews");
    if (!reviews.length) root.append(node("p", "No answers waiting for review.", "empty"));
    for (const r of reviews) {
      const card = node("div", undefined, "card review");
      card.append(node("h3", r.question));
      card.append(node("p", `${r.reasons.join(", ")} - support ${num(r.groundedness)} - ${r.asked_at}`, "meta"));
      card.append(node("div", r.answer, "answer"));
      for (const p of r.passages) {
        card.append(node("div", `[${p.citation_id}] ${p.title || p.document_id} @ ${p.source_version} - chunk ` +
          `${p.chunk_id}: ${p.text}`, p.supports === false ? "passage unsupported" : "passage"));
      }
      const curate = node("label", " curate as a question");
      const box = node("input");
      box.type = "checkbox";
      curate.prepend(box);
      const decide = (verdict) => () => api(`/v1/console/reviews/${encodeURIComponent(r.query_id)}/decision`, "POST",
        { verdict, curate: box.checked });
      card.append(action("Right", decide("right")), action("Wrong", decide("wrong")), curate);
      root.append(card);
    }
  },
};

let current = "ask";
function loadPage(name) {
  current = name;
  $("page-error").textContent = "";
  for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== name;
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.page === name);
  if (!pages[name]) return Promise.resolve();
  const root = $(`${name}-rows`);
  root.replaceChildren();
  return pages[name](root).catch((e) => { $("page-error").textContent = e.message; });
}

if (document.querySelectorAll) {
  for (const t of document.querySelectorAll(".tab")) t.addEventListener("click", () => loadPage(t.dataset.page));
  $("rollback").addEventListener("click", () => {
    api("/v1/console/generations/rollback", "POST").then(() => loadPage("generations"))
      .catch((e) => { $("page-error").textContent = e.message; });
  });
}

$("signin-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  $("signin-error").textContent = "";
  signIn($("token").value.trim()).catch((e) => { $("signin-error").textContent = e.message; });
});
$("ask-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  ask($("question").value, $("request-class").value).catch((e) => { $("ask-error").textContent = e.message; });
});
$("signout").addEventListener("click", () => { sessionStorage.removeItem(KEY); show(false); });
if (token()) signIn(token()).catch(() => show(false));
