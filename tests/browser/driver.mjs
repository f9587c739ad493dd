// A remote-controlled headless Chromium for huddle's browser tests (tests/tests/browser.rs).
//
//   node driver.mjs WEB_DIR
//
// Serves WEB_DIR on 127.0.0.1 (an ephemeral port), starts Debian's Chromium through
// playwright-core, then takes one JSON command per line on stdin:
//   {"cmd":"open","name":"a","path":"/lobby.html?room=..."}   open a page
//   {"cmd":"close","name":"a"}                                  close it (the peer leaves)
//   {"cmd":"press","name":"a","key":"Escape"}                   press a key on it
//   {"cmd":"hide","name":"a"}    the player switches tabs: the page hears `visibilitychange`
//                                (hidden), then is frozen as a browser may freeze a background
//                                tab (paused in the debugger: none of its scripts run; headless
//                                Chromium has no tabs to switch, and a frozen page is the worst a
//                                background tab gets: a throttled one still runs once a second)
//   {"cmd":"show","name":"a"}    it comes back: resumed, then `visibilitychange` (visible)
//   {"cmd":"quit"}
// and writes one JSON event per line on stdout:
//   {"ev":"ready","port":N}                     serving and browsing
//   {"ev":"status","name":"a","status":{...}}   the page's window.huddleStatus, every 100 ms
//   {"ev":"console","name":"a","type":"error","text":"..."}
//   {"ev":"pageerror","name":"a","text":"..."}  an uncaught error in the page
//   {"ev":"closed","name":"a"}
// It exits when stdin closes, so a test that dies takes the browser with it.
//   {"cmd":"canvas","name":"a"}  what page a's canvas shows: {"ev":"canvas","name":"a",
//                                "width":W,"height":H,"colors":N,"lit":M} (distinct colours, and
//                                pixels brighter than the dark background)
// With HUDDLE_WEBGL=1 Chromium renders WebGL2 in software (SwiftShader through ANGLE), for pages
// Bevy's renderer draws.
// With HUDDLE_DENY_MEDIA=1 the browser refuses every camera and microphone request (as a player
// who clicks "block" would); the pages then gather no ICE candidates here either.

import { chromium } from "playwright-core";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { join, normalize, extname } from "node:path";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";

const root = process.argv[2];
const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const types = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm" };

const server = createServer(async (req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
  if (path.includes("..")) {
    res.writeHead(400).end();
    return;
  }
  try {
    const body = await readFile(join(root, path));
    res.writeHead(200, { "content-type": types[extname(path)] ?? "application/octet-stream" });
    res.end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const port = server.address().port;

// Our own flags only (Playwright's defaults include a --disable-features list that would
// replace ours). In a loopback-only namespace Chromium gathers ICE candidates only with
// loopback allowed in peer connections and camera/microphone permission granted
// (../shared/FACTS.md).
const deny = process.env.HUDDLE_DENY_MEDIA === "1";
const webgl = process.env.HUDDLE_WEBGL === "1";
const profile = mkdtempSync(join(tmpdir(), "huddle-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  ignoreDefaultArgs: true,
  args: [
    "--headless=new",
    "--remote-debugging-pipe",
    "--no-sandbox",
    ...(webgl ? ["--use-angle=swiftshader", "--enable-unsafe-swiftshader"] : ["--disable-gpu"]),
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--allow-loopback-in-peer-connection",
    // Pages play and make sound without a click (a page's tone source runs in its audio
    // context, which Chromium may otherwise start suspended).
    "--autoplay-policy=no-user-gesture-required",
    deny ? "--use-fake-ui-for-media-stream=deny" : "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "about:blank",
  ],
});
if (!deny) {
  await browser.grantPermissions(["camera", "microphone"], { origin: `http://127.0.0.1:${port}` });
}

const pages = new Map();

async function open(name, path) {
  const page = await browser.newPage();
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") {
      emit({ ev: "console", name, type: m.type(), text: m.text() });
    }
  });
  page.on("pageerror", (e) => emit({ ev: "pageerror", name, text: String(e) }));
  page.on("crash", () => emit({ ev: "pageerror", name, text: "the page crashed" }));
  pages.set(name, page);
  await page.goto(`http://127.0.0.1:${port}${path}`);
  emit({ ev: "opened", name });
}

async function press(name, key) {
  const page = pages.get(name);
  if (page) await page.keyboard.press(key);
}

async function canvas(name) {
  const page = pages.get(name);
  if (!page) return;
  const png = await page.locator("canvas").first().screenshot();
  const stats = await page.evaluate(async (b64) => {
    const img = new Image();
    img.src = "data:image/png;base64," + b64;
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.width;
    c.height = img.height;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    const colors = new Set();
    let lit = 0;
    for (let i = 0; i < d.length; i += 4) {
      colors.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
      if (d[i] + d[i + 1] + d[i + 2] > 300) lit++;
    }
    return { width: c.width, height: c.height, colors: colors.size, lit };
  }, png.toString("base64"));
  emit({ ev: "canvas", name, ...stats });
}

// Pages frozen by "hide", with the DevTools session that froze them.
const frozen = new Map();

const setVisibility = (page, hidden) =>
  page.evaluate((hidden) => {
    const state = hidden ? "hidden" : "visible";
    Object.defineProperty(document, "visibilityState", { value: state, configurable: true });
    Object.defineProperty(document, "hidden", { value: hidden, configurable: true });
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);

async function hide(name) {
  const page = pages.get(name);
  if (!page || frozen.has(name)) return;
  await setVisibility(page, true);
  // The page's next frames tell its peers it is away; then it stops.
  await new Promise((done) => setTimeout(done, 300));
  // Paused in the debugger: none of its scripts run (Page.setWebLifecycleState does not freeze
  // a page Chromium sees as visible).
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Debugger.enable");
  await cdp.send("Debugger.pause");
  frozen.set(name, cdp);
  emit({ ev: "hidden", name });
}

async function show(name) {
  const page = pages.get(name);
  const cdp = frozen.get(name);
  frozen.delete(name);
  if (cdp) {
    await cdp.send("Debugger.resume");
    await cdp.send("Debugger.disable");
    await cdp.detach();
  }
  if (page) await setVisibility(page, false);
  emit({ ev: "shown", name });
}

async function close(name) {
  const page = pages.get(name);
  pages.delete(name);
  if (page) await page.close();
  emit({ ev: "closed", name });
}

setInterval(async () => {
  for (const [name, page] of pages) {
    // A frozen page answers nothing until it is thawed.
    if (frozen.has(name)) continue;
    try {
      const text = await page.evaluate(() => window.huddleStatus ?? null);
      emit({ ev: "status", name, status: text ? JSON.parse(text) : null });
    } catch {
      // The page is navigating or closing.
    }
  }
}, 100);

async function quit() {
  await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  server.close();
  process.exit(0);
}

emit({ ev: "ready", port });
const lines = createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  try {
    const c = JSON.parse(line);
    if (c.cmd === "open") await open(c.name, c.path);
    else if (c.cmd === "close") await close(c.name);
    else if (c.cmd === "press") await press(c.name, c.key);
    else if (c.cmd === "hide") await hide(c.name);
    else if (c.cmd === "canvas") await canvas(c.name);
    else if (c.cmd === "show") await show(c.name);
    else if (c.cmd === "quit") await quit();
  } catch (e) {
    emit({ ev: "pageerror", name: "driver", text: String(e) });
  }
});
lines.on("close", quit);
