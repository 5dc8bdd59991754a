import { request as httpRequest } from "node:http";

import { expect, test, type BrowserContext } from "@playwright/test";

import { baseURL } from "../env";
import { open, signUp, uniqueEmail } from "../tests/fixtures/pages";

// How long until a page is interactive, on loopback: the chat (a conversation with messages,
// signed in) against the sign-in page, in the same run. "Interactive" is the moment the app
// marks the body `data-hydrated` (after hydration, once the page's data has hydrated too),
// timed in the page from the start of navigation. Cold: a new browser context per load (no
// cache). Warm: the same context again (the wasm, JavaScript and CSS come from the cache).
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 15);

const MARK = `
  new MutationObserver((_, obs) => {
    if (document.body && document.body.hasAttribute("data-hydrated")) {
      window.__interactive = performance.now();
      obs.disconnect();
    }
  }).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-hydrated"] });
`;

async function interactiveMs(context: BrowserContext, path: string): Promise<number> {
  const page = await context.newPage();
  await page.addInitScript(MARK);
  await page.goto(path);
  await page.locator("body[data-hydrated]").waitFor();
  await page.waitForFunction(() => (window as any).__interactive !== undefined);
  const ms = await page.evaluate(() => (window as any).__interactive as number);
  await page.close();
  return ms;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function servedBytes(path: string, encoding: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${baseURL}${path}`, { headers: { "accept-encoding": encoding } }, (res) => {
      let n = 0;
      res.on("data", (c: Buffer) => (n += c.length));
      res.on("end", () => resolve(n));
    });
    req.on("error", reject);
    req.end();
  });
}

test("page speed: the chat page against the sign-in page", async ({ browser, page }) => {
  // A clinic with an agent and a conversation with a few messages.
  await signUp(page, `Speed Clinic ${Date.now()}`, "Ada Admin", uniqueEmail("speed"));
  await expect(page.getByTestId("clinic-name")).toBeVisible();
  await open(page, "/settings/keys");
  const openai = page.getByTestId("provider-openai");
  await openai.getByLabel("API key").fill("sk-test-bench-7878");
  await openai.getByRole("button", { name: "Save" }).click();
  await expect(openai.getByTestId("key-status")).toContainText("…7878");
  await open(page, "/agents");
  const form = page.getByRole("region", { name: "New agent" });
  await form.getByLabel("Name").fill("Helper");
  await form.getByLabel("Model").fill("gpt-4o-mini");
  await form.getByRole("button", { name: "Create agent" }).click();
  await expect(page.getByTestId("agent-row")).toHaveCount(1);
  await open(page, "/chat");
  await page.getByLabel("Message").fill("Opening hours on Saturday? [sim:markdown]");
  await page.getByRole("button", { name: "Start" }).click();
  await expect(page).toHaveURL(/\/chat\/[0-9a-f-]{36}$/);
  await expect(page.getByRole("button", { name: "Send" })).toBeVisible();
  const chatPath = new URL(page.url()).pathname;
  const state = await page.context().storageState();

  const signedOut = () => browser.newContext();
  const signedIn = () => browser.newContext({ storageState: state });
  const cold = { signin: [] as number[], chat: [] as number[] };
  const warm = { signin: [] as number[], chat: [] as number[] };
  // Alternating, so both pages see the same machine.
  for (let i = 0; i < ROUNDS; i++) {
    for (const [name, make, path] of [
      ["signin", signedOut, "/signin"],
      ["chat", signedIn, chatPath],
    ] as const) {
      const ctx = await make();
      cold[name].push(await interactiveMs(ctx, path));
      warm[name].push(await interactiveMs(ctx, path));
      await ctx.close();
    }
  }

  // The wasm as built and as served.
  const html = await (await fetch(`${baseURL}/signin`)).text();
  const wasmPath = html.match(/\/pkg\/[^"']+\.wasm/)?.[0] ?? "";
  expect(wasmPath, "the page names its wasm").not.toBe("");
  const raw = Number((await fetch(`${baseURL}${wasmPath}`)).headers.get("content-length") ?? 0)
    || (await (await fetch(`${baseURL}${wasmPath}`)).arrayBuffer()).byteLength;
  const br = await servedBytes(wasmPath, "br");
  const gz = await servedBytes(wasmPath, "gzip");

  const row = (label: string, xs: { signin: number[]; chat: number[] }) =>
    `| ${label} | ${median(xs.signin).toFixed(0)} | ${median(xs.chat).toFixed(0)} | ${(median(xs.chat) / median(xs.signin)).toFixed(2)}× |`;
  console.log(
    [
      "",
      `Time until interactive, median of ${ROUNDS} loads each (ms):`,
      "",
      "| cache | sign-in | chat (conversation) | chat ÷ sign-in |",
      "|---|---|---|---|",
      row("cold", cold),
      row("warm", warm),
      "",
      `wasm ${wasmPath}: ${(raw / 1024).toFixed(0)} KiB as built, ${(br / 1024).toFixed(0)} KiB served with brotli, ${(gz / 1024).toFixed(0)} KiB with gzip`,
      "",
    ].join("\n"),
  );
});
