// The ragstream console: sign in with a token, ask through the OpenAI-compatible API (streamed), show the
// answer as it arrives and its citations (document, version, chunk). Everything shown is set as text, never
// as HTML. The token lives in sessionStorage (this tab) and goes only to this origin.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "ragstream.token";

function token() { return sessionStorage.getItem(KEY) || ""; }

function show(signedIn, who) {
  $("signin").hidden = signedIn;
  $("ask").hidden = !signedIn;
  $("who").textContent = signedIn ? who : "";
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
