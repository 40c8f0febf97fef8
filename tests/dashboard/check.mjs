// Drives Debian's chromium (headless, through playwright-core; no browser download)
// against the edge admin dashboard. Used by tests/edge_dashboard.rs:
//
//   node check.mjs --admin http://127.0.0.1:PORT --screenshot target/test-artifacts/dashboard.png
//
// Protocol on stdio (one line each):
//   stdout "READY {json}"  the page rendered every endpoint of /clusters and they match
//   stdin  {json}          sent by the test after it sent traffic: {"cluster", "served":
//                          {zone: requests}, "events": [substrings expected in the event list]}
//   stdout "RESULT {json}" the chart and events matched; the screenshot is written
// Any mismatch or timeout exits non-zero with the reason on stderr.

import { chromium } from "playwright-core";
import { mkdtempSync, rmSync, mkdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { createInterface } from "node:readline";

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
}
const admin = arg("admin");
const shot = arg("screenshot", "target/test-artifacts/dashboard.png");
const chromePath = arg("chromium", "/usr/bin/chromium");
if (!admin) {
  console.error("usage: check.mjs --admin http://HOST:PORT [--screenshot PATH]");
  process.exit(2);
}

function fail(msg) {
  console.error(`dashboard check failed: ${msg}`);
  process.exitCode = 1;
  throw new Error(msg);
}

async function until(what, timeoutMs, fn) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last && last.ok) return last;
    } catch (e) {
      last = { error: String(e) };
    }
    if (Date.now() > deadline) fail(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const userDataDir = mkdtempSync(join(tmpdir(), "meshedge-dashboard-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: chromePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1400, height: 900 },
    deviceScaleFactor: 1,
    colorScheme: "light",
  });
  const page = context.pages()[0] || (await context.newPage());
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  const external = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(admin)) external.push(r.url());
  });

  const resp = await page.goto(`${admin}/`, { waitUntil: "load" });
  if (!resp || resp.status() !== 200) fail(`GET / answered ${resp && resp.status()}`);
  const ctype = resp.headers()["content-type"] || "";
  if (!ctype.startsWith("text/html")) fail(`GET / content-type ${ctype}`);

  // Endpoints shown == endpoints of /clusters (cluster, zone, address), zones grouped.
  const expected = await (await fetch(`${admin}/clusters`)).json();
  const want = [];
  for (const c of expected.clusters) {
    for (const e of c.endpoints) want.push(`${c.name} | ${e.zone ?? ""} | ${e.address}`);
  }
  want.sort();
  const seen = await until("the endpoints to render", 20000, async () => {
    const polls = Number(await page.getAttribute("body", "data-polls"));
    const got = await page.$$eval("tr[data-endpoint]", (rows) =>
      rows.map((r) => {
        const group = r.closest("[data-zone]:not(tr)");
        const card = r.closest(".cluster[data-cluster]");
        return {
          row: `${r.dataset.cluster} | ${r.dataset.zone} | ${r.dataset.endpoint}`,
          text: r.querySelector("td").textContent.trim(),
          groupZone: group ? group.dataset.zone : null,
          card: card ? card.dataset.cluster : null,
        };
      }),
    );
    const rows = got.map((g) => g.row).sort();
    return { ok: polls >= 2 && JSON.stringify(rows) === JSON.stringify(want), polls, rows, got };
  });
  for (const g of seen.got) {
    const [cluster, zone, address] = g.row.split(" | ");
    if (g.text !== address) fail(`row shows ${g.text}, data-endpoint ${address}`);
    if (g.groupZone !== zone) fail(`${address} listed under zone group ${g.groupZone}, not ${zone}`);
    if (g.card !== cluster) fail(`${address} listed under cluster ${g.card}, not ${cluster}`);
  }
  // Zone groups per cluster == the zones /clusters has for it.
  for (const c of expected.clusters) {
    const zones = [...new Set(c.endpoints.map((e) => e.zone ?? ""))].sort();
    const shown = (
      await page.$$eval(`.cluster[data-cluster="${c.name}"] .zone[data-zone]`, (els) => els.map((e) => e.dataset.zone))
    ).sort();
    if (JSON.stringify(zones) !== JSON.stringify(shown)) {
      fail(`cluster ${c.name}: zone groups ${JSON.stringify(shown)} != ${JSON.stringify(zones)}`);
    }
  }
  console.log(`READY ${JSON.stringify({ endpoints: want.length, polls: seen.polls })}`);

  const next = await stdinLines.next();
  if (next.done) fail("stdin closed before the traffic report");
  const report = JSON.parse(next.value);

  // The chart's legend: non-zero share exactly for the zones that served requests, and
  // the request counts from counter deltas equal what the upstreams saw.
  await page.selectOption("#chart-cluster", report.cluster);
  const chart = await until("the chart to show the traffic", 30000, async () => {
    const legend = await page.$$eval("#legend li[data-chart-zone]", (els) =>
      Object.fromEntries(
        els.map((e) => [e.dataset.chartZone, { share: Number(e.dataset.share), requests: Number(e.dataset.requests) }]),
      ),
    );
    const bars = await page.$$eval("#chart rect[data-zone]", (els) => {
      const h = {};
      for (const e of els) h[e.dataset.zone] = (h[e.dataset.zone] || 0) + Number(e.getAttribute("height"));
      return h;
    });
    let ok = true;
    for (const [zone, n] of Object.entries(report.served)) {
      const l = legend[zone];
      if (!l) ok = false;
      else if (n > 0) ok = ok && l.share > 0 && l.requests === n && (bars[zone] || 0) > 0;
      else ok = ok && l.share === 0 && !bars[zone];
    }
    return { ok, legend, bars };
  });

  const events = await until("the failure events", 20000, async () => {
    const texts = await page.$$eval("#events li .what", (els) => els.map((e) => e.textContent));
    const missing = (report.events || []).filter((want) => !texts.some((t) => t.includes(want)));
    return { ok: missing.length === 0, missing, texts };
  });

  // Certificates: one identity and one serving row with a positive time to expiry.
  const certs = await page.$$eval("#certs tr[data-cert-kind]", (rows) =>
    rows.map((r) => ({ kind: r.dataset.certKind, text: r.querySelector(".pill").textContent })),
  );
  for (const kind of ["identity", "serving"]) {
    const c = certs.find((x) => x.kind === kind);
    if (!c || /expired/.test(c.text)) fail(`certificate ${kind} not shown with a time to expiry: ${JSON.stringify(certs)}`);
  }
  const fleet = (await page.textContent("#fleet")).trim();

  // Back to all clusters for the screenshot; let one more poll render.
  await page.selectOption("#chart-cluster", "");
  const polls = Number(await page.getAttribute("body", "data-polls"));
  await until("one more poll", 5000, async () => ({
    ok: Number(await page.getAttribute("body", "data-polls")) > polls,
  }));
  mkdirSync(dirname(shot), { recursive: true });
  await page.screenshot({ path: shot, fullPage: true });
  if (!(statSync(shot).size > 0)) fail(`screenshot ${shot} is empty`);
  if (consoleErrors.length) fail(`page errors: ${consoleErrors.join("; ")}`);
  if (external.length) fail(`the page requested other origins: ${external.join(", ")}`);
  console.log(
    `RESULT ${JSON.stringify({ legend: chart.legend, bars: chart.bars, events: events.texts, certs, fleet, screenshot: shot })}`,
  );
} catch (e) {
  if (!process.exitCode) {
    console.error(`dashboard check failed: ${e && e.stack ? e.stack : e}`);
    process.exitCode = 1;
  }
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  process.stdin.destroy();
}
