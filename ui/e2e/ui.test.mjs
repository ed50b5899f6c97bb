// The web UI in a real browser: Debian's Chromium driven by playwright-core
// against a real `cairn serve` (the debug binary, the mock model, a fresh
// data directory). Each test is a person's errand; the screenshots of
// docs/ui.md are taken on the way, and the performance figures of
// docs/benchmarks.md are measured and printed (and written to
// target/ui-perf.json).
//
//   CAIRN_BIN      the cairn binary (default: target/debug/cairn)
//   CHROMIUM       the browser (default: chromium on PATH)
//   CAIRN_UI_SHOTS where screenshots go (default: target/ui-shots; `cargo xtask ui --shots` puts them in docs/ui)
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";

const ROOT = new URL("../../", import.meta.url).pathname;
const BIN = process.env.CAIRN_BIN ?? join(ROOT, "target/debug/cairn");
const SHOTS = process.env.CAIRN_UI_SHOTS ?? join(ROOT, "target/ui-shots");
const PATIENCE = 20_000;

function chromiumPath() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const name of ["chromium", "chromium-browser", "google-chrome"]) {
    try {
      return execFileSync("sh", ["-c", `command -v ${name}`]).toString().trim();
    } catch {
      // try the next
    }
  }
  throw new Error("no Chromium: install it (apt-get install -y chromium) or set CHROMIUM");
}

const data = mkdtempSync(join(tmpdir(), "cairn-ui-"));
const env = { ...process.env, CAIRN_DATA_DIR: join(data, "data"), NO_COLOR: "1" };
let server;
let base;
let browser;
const tokens = {};

/** A token made with the command line: its secret. */
function token(name, role, gateRoles = []) {
  const args = ["token", "create", name, "--role", role, ...gateRoles.flatMap((r) => ["--gate-role", r])];
  return execFileSync(BIN, args, { env, cwd: data }).toString().split("\n")[0].trim();
}

/** The API as `who` (a token name), JSON in and out. */
async function call(method, path, who = "admin", body) {
  const response = await fetch(new URL(path, base), {
    method,
    headers: { Authorization: `Bearer ${tokens[who]}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** Starts `definition` through the API: the run's id. */
async function start(definition, inputs = {}) {
  const answer = await call("POST", "/api/v1/runs", "admin", { definition, inputs });
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return answer.body.run_id;
}

/** Waits until the run's status is `status`. */
async function until(run, status) {
  const deadline = Date.now() + PATIENCE;
  for (;;) {
    const { body } = await call("GET", `/api/v1/runs/${run}`);
    if (body.status === status) return body;
    assert.ok(Date.now() < deadline, `run ${run} is ${body.status}, not ${status}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A page signed in as `who`, with its console errors collected. */
async function signedIn(who) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  page.on("console", (m) => {
    // The page asks who it is before signing in: that 401 is expected.
    if (m.type() === "error" && !m.text().includes("401")) page.errors.push(m.text());
  });
  await page.goto(base);
  await page.getByLabel("API token").fill(tokens[who]);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("who").waitFor();
  return page;
}

async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });
}

before(async () => {
  mkdirSync(join(data, "data"), { recursive: true });
  tokens.admin = token("admin", "admin");
  tokens.ana = token("ana", "operator", ["lead"]);
  tokens.vic = token("vic", "viewer");
  server = spawn(BIN, ["--llm", "mock", "serve", "--listen", "127.0.0.1:0"], { env, cwd: data });
  base = await new Promise((resolve, reject) => {
    let out = "";
    const read = (chunk) => {
      out += chunk;
      const found = /listening on (http:\/\/\S+)/.exec(out);
      if (found) resolve(`${found[1]}/`.replace(/\/\/$/, "/"));
    };
    server.stdout.on("data", read);
    server.stderr.on("data", read);
    server.on("exit", (code) => reject(new Error(`cairn serve exited ${code}: ${out}`)));
  });
  browser = await chromium.launch({ executablePath: chromiumPath(), args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
});

const GATED = `cairn: 1
id: release-note
inputs:
  topic: { type: string, default: rivers }
agents:
  writer: { system: "You write release notes." }
steps:
  - id: draft
    agent: writer
    prompt: "Write a release note about {{ inputs.topic }}."
  - id: sign_off
    needs: [draft]
    approval:
      message: "Publish the note?"
      approvers: [lead]
  - id: publish
    needs: [sign_off]
    set: "{{ steps.draft.output }}"
`;

test("sign in, write a workflow, see its error where it is, fix it, start it, approve at its gate, see it complete", async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(base);
  await page.getByLabel("API token").waitFor();
  await shot(page, "sign-in");
  await page.close();

  const ui = await signedIn("ana");
  await ui.goto(`${base}workflows?edit`);
  const editor = ui.locator(".cm-content");
  await editor.waitFor();
  await editor.click();
  await ui.keyboard.press("Control+A");
  // `agnet` on line 9 is no key of a step.
  await ui.keyboard.insertText(GATED.replace("    agent: writer", "    agnet: writer"));
  const problem = ui.getByTestId("problems").locator("li", { hasText: "agnet" });
  await problem.waitFor({ timeout: PATIENCE });
  assert.match(await problem.textContent(), /^line 9, column 5: .*agnet/);
  await ui.locator(".cm-lintRange-error").first().waitFor();
  await shot(ui, "editor-error");

  await editor.click();
  await ui.keyboard.press("Control+A");
  await ui.keyboard.insertText(GATED);
  await ui.getByRole("button", { name: "Start run" }).waitFor({ timeout: PATIENCE });
  assert.equal(await ui.getByTestId("problems").locator("li").count(), 0);
  await ui.getByLabel("input topic").fill("the new importer");
  await ui.getByLabel("labels").fill("team=docs");
  await shot(ui, "editor");
  // Registered in the catalog as it stands, then started.
  await ui.getByRole("button", { name: "Register" }).click();
  assert.match(await ui.getByTestId("registered").textContent(), /^Registered release-note version [0-9a-f]{12} \(#1\)\.$/);
  await ui.getByRole("button", { name: "Start run" }).click();

  await ui.waitForURL(/\/runs\//);
  const gate = ui.getByTestId("gate-sign_off");
  await gate.waitFor({ timeout: PATIENCE });
  assert.equal(await ui.getByTestId("run-status").textContent(), "waiting approval");
  assert.equal(await ui.getByTestId("run-labels").textContent(), "team=docs");
  // The agent step's panel shows the prompt it sent, rendered.
  await ui.locator(".react-flow__node", { hasText: "draft" }).click();
  await ui.getByTestId("step-panel").getByText("Write a release note about the new importer.").first().waitFor();
  await shot(ui, "run-gate");
  const run = decodeURIComponent(new URL(ui.url()).pathname.split("/").pop());
  // The inbox lists the gate (one request, the server's rule) and leads back to it.
  await ui.getByRole("link", { name: "Inbox" }).click();
  const row = ui.getByTestId("inbox").locator("tr", { hasText: run });
  await row.waitFor({ timeout: PATIENCE });
  assert.match(await row.textContent(), /sign_off.*approval.*lead/);
  await shot(ui, "inbox");
  await row.getByRole("link", { name: run }).click();
  await gate.getByRole("button", { name: "Approve as lead" }).click();
  await ui.getByTestId("run-status").getByText("completed").waitFor({ timeout: PATIENCE });
  await ui.locator(".react-flow__node", { hasText: "publish" }).click();
  await ui.getByTestId("step-panel").getByText("succeeded").waitFor();
  await shot(ui, "run-completed");

  const events = (await call("GET", `/api/v1/runs/${run}/events`)).body.events;
  const decided = events.find((e) => e.type === "gate_decided");
  assert.equal(decided.actor, "ana", "the decision is the signed-in identity's");
  assert.equal(decided.role, "lead");
  const started = (await call("GET", `/api/v1/runs/${run}`)).body;
  assert.equal(started.inputs.topic, "the new importer", "the form's input reached the run");
  assert.deepEqual(started.labels, { team: "docs" }, "the form's labels reached the run");
  // The catalog lists the workflow with its version and its run, as the server figures them.
  await ui.getByRole("link", { name: "Workflows" }).click();
  const entry = ui.locator('tr[data-workflow="release-note"]');
  await entry.waitFor({ timeout: PATIENCE });
  const cells = await entry.locator("td").allTextContents();
  assert.match(cells[1], /^[0-9a-f]{12} \(#1\)$/);
  assert.deepEqual([cells[2], cells[3]], ["1", "100 %"]);
  await shot(ui, "workflows");
  // The run list filters on labels, on the server.
  await ui.goto(`${base}runs?label=team%3Ddocs`);
  await ui.locator(`tr[data-run="${run}"]`).waitFor({ timeout: PATIENCE });
  assert.equal(await ui.locator("tr[data-run]").count(), 1, "only the labelled run");
  assert.deepEqual(ui.errors, []);
});

test("reject with a comment: the rework arrives, with the comment in it", async () => {
  const run = await start(`cairn: 1
id: epics
agents:
  analyst: { system: "You list epics." }
steps:
  - id: epics
    agent: analyst
    prompt: "List the epics.{% if feedback %} Fix: {{ feedback }}{% endif %}"
    accept: { approvers: [lead], max_reworks: 2 }
`);
  await until(run, "waiting_acceptance");
  const ui = await signedIn("ana");
  await ui.goto(`${base}runs/${run}`);
  const gate = ui.getByTestId("gate-epics");
  await gate.waitFor();
  await gate.getByLabel("comment").fill("Split checkout from payments");
  await gate.getByRole("button", { name: "Reject" }).click();
  // The rework comes back to the same gate, its second attempt.
  await ui.locator(".react-flow__node", { hasText: "attempt 2" }).waitFor({ timeout: PATIENCE });
  await gate.waitFor();
  await ui.locator(".react-flow__node", { hasText: "epics" }).click();
  const panel = ui.getByTestId("step-panel");
  await panel.getByText("ana: Split checkout from payments").waitFor();
  await ui.getByRole("button", { name: /^events/ }).click();
  await ui.getByTestId("event-scroll").getByText("step_reworked").waitFor();
  await shot(ui, "run-rework");
  const step = (await call("GET", `/api/v1/runs/${run}`)).body.steps.find((s) => s.path === "epics");
  assert.equal(step.attempts, 2);
  assert.deepEqual(ui.errors, []);
});

test("an interactive step: the agent and a person take turns until the person ends it", async () => {
  const run = await start(`cairn: 1
id: pairing
agents:
  namer: { system: "You name services." }
steps:
  - id: chat
    agent: namer
    prompt: "Help me name the billing service."
    interactive: true
`);
  await until(run, "waiting_conversation");
  const ui = await signedIn("ana");
  await ui.goto(`${base}runs/${run}`);
  const gate = ui.getByTestId("gate-chat");
  await gate.getByText("Your turn in").waitFor();
  await gate.getByLabel("comment").fill("Shorter, one word.");
  await gate.getByRole("button", { name: "Reply" }).click();
  // The agent's next turn comes back to the same gate, its second attempt.
  await ui.locator(".react-flow__node", { hasText: "attempt 2" }).waitFor({ timeout: PATIENCE });
  await gate.getByText("Your turn in").waitFor();
  await ui.locator(".react-flow__node", { hasText: "chat" }).click();
  await ui.getByTestId("step-panel").getByText("Shorter, one word.", { exact: true }).waitFor();
  await shot(ui, "run-conversation");
  await gate.getByRole("button", { name: "End it" }).click();
  const done = await until(run, "completed");
  const chat = done.steps.find((s) => s.path === "chat");
  assert.deepEqual(
    chat.output.map((turn) => turn.role),
    ["agent", "person", "agent"],
  );
  assert.equal(chat.output[1].text, "Shorter, one word.");
  assert.deepEqual(ui.errors, []);
});

test("fork from a checkpoint: only the steps after it run again", async () => {
  const run = await start(`cairn: 1
id: chain
agents:
  w: { system: "You write." }
steps:
  - id: plan
    agent: w
    prompt: "Plan it."
  - id: build
    needs: [plan]
    agent: w
    prompt: "Build {{ steps.plan.output }}"
  - id: check
    needs: [build]
    set: "{{ steps.build.output }}"
`);
  await until(run, "completed");
  const ui = await signedIn("ana");
  await ui.goto(`${base}runs/${run}`);
  await ui.getByRole("button", { name: "checkpoints" }).click();
  const row = ui.locator("table.checkpoints tr", { hasText: "after plan (succeeded)" });
  await row.waitFor();
  await shot(ui, "run-checkpoints");
  await row.getByRole("button", { name: "Fork from here" }).click();
  await ui.waitForURL((url) => !url.pathname.endsWith(`/${run}`));
  const fork = decodeURIComponent(new URL(ui.url()).pathname.split("/").pop());
  await ui.getByTestId("run-status").getByText("completed").waitFor({ timeout: PATIENCE });
  const events = (await call("GET", `/api/v1/runs/${fork}/events`)).body.events;
  const at = events.findIndex((e) => e.type === "run_forked");
  assert.ok(at > 0, "the fork says where it comes from");
  const started = events.slice(at + 1).filter((e) => e.type === "step_started").map((e) => e.path);
  const forked = (await call("GET", `/api/v1/runs/${fork}`)).body;
  assert.equal(forked.forked_from.run_id, run);
  assert.ok(!started.includes("plan"), `plan ran again in the fork: ${started}`);
  assert.ok(started.includes("build") && started.includes("check"), `${started}`);
  assert.deepEqual(ui.errors, []);
});

test("a viewer sees no decision buttons, and the API refuses its decision anyway", async () => {
  const run = await start(GATED);
  await until(run, "waiting_approval");
  const ui = await signedIn("vic");
  await ui.goto(`${base}runs/${run}`);
  const gate = ui.getByTestId("gate-sign_off");
  await gate.waitFor();
  await gate.getByTestId("cannot-decide").waitFor();
  assert.match(await gate.getByTestId("cannot-decide").textContent(), /the gate waits for lead/);
  assert.equal(await ui.getByRole("button", { name: /Approve/ }).count(), 0);
  assert.equal(await ui.getByRole("button", { name: "Pause" }).count(), 0);
  await shot(ui, "run-viewer");
  const refused = await ui.evaluate(async (id) => {
    const who = await (await fetch("/api/v1/session")).json();
    const answer = await fetch(`/api/v1/runs/${id}/approve`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": who.csrf },
      body: JSON.stringify({ as: "lead" }),
    });
    return answer.status;
  }, run);
  assert.equal(refused, 403);
  assert.equal((await call("GET", `/api/v1/runs/${run}`)).body.status, "waiting_approval");
});

test("HTML and script in an output are shown as text and run nothing", async () => {
  const hostile = `<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">`;
  const run = await start(`cairn: 1
id: hostile
steps:
  - id: echo
    set: '${hostile}'
  - id: doc
    set: "# Notes\\n\\n- ${hostile.replaceAll('"', '\\"')}"
`);
  await until(run, "completed");
  const ui = await signedIn("ana");
  await ui.goto(`${base}runs/${run}`);
  for (const step of ["echo", "doc"]) {
    await ui.locator(".react-flow__node", { hasText: step }).click();
    await ui.getByTestId("step-panel").getByText(step, { exact: true }).waitFor();
    assert.ok((await ui.getByTestId("step-panel").textContent()).includes("<script>"));
    assert.equal(await ui.getByTestId("step-panel").locator("img, script").count(), 0);
  }
  assert.equal(await ui.evaluate(() => window.__pwned), undefined);
  assert.deepEqual(ui.errors, []);
});

test("search finds a run by its output and a workflow by its description, and leads to each", async () => {
  const run = await start(`cairn: 1
id: field-notes
description: Notes on the birds by the river
steps:
  - id: note
    set: "A heron stood in the shallows at dawn"
`);
  await until(run, "completed");
  const ui = await signedIn("vic");
  const box = ui.getByLabel("search workflows and runs");
  await box.fill("herons birds");
  await box.press("Enter");
  const hits = ui.getByTestId("hits");
  await hits.locator(`[data-hit="${run}"]`).waitFor();
  await hits.locator('[data-hit="field-notes"]').waitFor();
  const runHit = hits.locator(`[data-hit="${run}"]`);
  assert.equal(await runHit.locator("mark").first().textContent(), "heron");
  assert.ok((await runHit.textContent()).includes("completed"));
  assert.equal(await hits.locator('[data-hit="field-notes"] mark').first().textContent(), "birds");
  await shot(ui, "search");
  await ui.getByLabel("kind").selectOption("workflow");
  await hits.locator(`[data-hit="${run}"]`).waitFor({ state: "detached" });
  await ui.getByLabel("kind").selectOption("");
  await runHit.getByRole("link", { name: run }).click();
  await ui.waitForURL(`**/runs/${run}`);
  assert.deepEqual(ui.errors, []);
});

test("an ended session goes back to sign-in", async () => {
  tokens.brief = token("brief", "viewer");
  const ui = await signedIn("brief");
  assert.equal((await call("DELETE", "/api/v1/tokens/brief")).status, 204);
  // The run feed may notice first and leave the page; else the next request does.
  await ui.getByRole("link", { name: "Inbox" }).click({ timeout: 2000 }).catch(() => {});
  await ui.getByText("Your session ended. Sign in again.").waitFor({ timeout: PATIENCE });
});

// Its times are figures for `cargo xtask ui --perf` (a release binary) to
// report against the targets, never asserted here: only what does not
// depend on the machine's speed is.
test("a run of 10,000 events and 1,000 instances opens, draws its group, and keeps its event list virtual", async () => {
  const items = Array.from({ length: 1000 }, (_, i) => i);
  const run = await start(
    `cairn: 1
id: wide
inputs:
  items: { type: array }
steps:
  - id: fan
    for_each: { items: "{{ inputs.items }}", as: it, max_parallel: 64 }
    steps:
      - id: a
        set: "{{ it }}"
      - id: b
        needs: [a]
        set: "{{ steps.a.output }}"
      - id: c
        needs: [b]
        set: "{{ steps.b.output }}"
      - id: d
        needs: [c]
        set: "{{ steps.c.output }}"
      - id: e
        needs: [d]
        set: "{{ steps.d.output }}"
`,
    { items },
  );
  const done = await until(run, "completed");
  let total = 0;
  for (let after = 0; ; ) {
    const page = (await call("GET", `/api/v1/runs/${run}/events?after=${after}&limit=1000`)).body;
    total += page.events.length;
    if (page.next === null) break;
    after = page.next;
  }
  assert.ok(total >= 10_000, `the run has ${total} events`);
  const ui = await signedIn("ana");
  await ui.evaluate(() => {
    window.__long = [];
    new PerformanceObserver((list) => window.__long.push(...list.getEntries().map((e) => e.duration))).observe({ type: "longtask", buffered: false });
  });
  const began = Date.now();
  await ui.goto(`${base}runs/${run}`);
  await ui.locator(".react-flow__node", { hasText: "1000/1000 instances" }).waitFor({ timeout: PATIENCE });
  const firstRender = Date.now() - began;
  await ui.getByRole("button", { name: `events (${total})` }).waitFor({ timeout: PATIENCE });
  const allEvents = Date.now() - began;
  await ui.getByRole("button", { name: /^events/ }).click();
  await ui.evaluate(() => {
    window.__long = [];
    new PerformanceObserver((list) => window.__long.push(...list.getEntries().map((e) => e.duration))).observe({ type: "longtask" });
  });
  const scroller = ui.getByTestId("event-scroll");
  for (let i = 0; i < 40; i++) {
    await scroller.evaluate((el, y) => {
      el.scrollTop = y;
    }, i * 6500);
    await ui.waitForTimeout(16);
  }
  await ui.waitForTimeout(200);
  const longTasks = await ui.evaluate(() => window.__long);
  const rows = await scroller.locator(".event-row").count();
  await shot(ui, "run-wide");
  // Expanding the group draws one node per instance.
  await ui.locator(".react-flow__node", { hasText: "fan" }).first().click();
  await ui.locator(".react-flow__node", { hasText: "fan[999]" }).waitFor({ timeout: PATIENCE });
  const figures = {
    events: total,
    instances: done.steps.filter((s) => /^fan\[\d+\]\.a$/.test(s.path)).length,
    first_render_ms: firstRender,
    all_events_ms: allEvents,
    rows_in_document: rows,
    long_tasks_while_scrolling_ms: longTasks,
  };
  console.log(`ui performance: ${JSON.stringify(figures)}`);
  mkdirSync(join(ROOT, "target"), { recursive: true });
  writeFileSync(process.env.CAIRN_UI_PERF_OUT ?? join(ROOT, "target/ui-perf.json"), `${JSON.stringify(figures, null, 2)}\n`);
  assert.equal(figures.instances, 1000);
  assert.ok(rows < 200, `${rows} event rows in the document: not virtualised`);
});
