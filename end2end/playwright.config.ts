import { defineConfig, devices } from "@playwright/test";

// The server under test: the binary `cargo leptos build` made, on its own port, against its
// own database (recreated by scripts/test.sh) and its own Redis key prefix.
const port = Number(process.env.E2E_PORT ?? 3100);
const baseURL = `http://127.0.0.1:${port}`;
const serverBin = process.env.TESSERA_SERVER_BIN ?? "../target/debug/server";
// The simulator of the paid provider APIs (testkit), so no test reaches a real provider.
const simPort = port + 99;
const simBin = process.env.TESSERA_SIM_BIN ?? "../target/debug/provider-sim";

export default defineConfig({
  testDir: "./tests",
  timeout: 60_000,
  expect: { timeout: 15_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  use: {
    baseURL,
    trace: "retain-on-failure",
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    },
  },
  projects: [{ name: "chromium", use: { ...devices["Desktop Chrome"] } }],
  webServer: [
    {
      command: `${simBin} 127.0.0.1:${simPort}`,
      url: `http://127.0.0.1:${simPort}/v1/models`,
      // The models list answers 401 without a key, which Playwright counts as up.
      timeout: 30_000,
      reuseExistingServer: false,
    },
    {
    command: `${serverBin} serve`,
    cwd: "..",
    url: `${baseURL}/readyz`,
    timeout: 60_000,
    reuseExistingServer: false,
    stdout: "pipe",
    stderr: "pipe",
    env: {
      ...(process.env as Record<string, string>),
      LEPTOS_OUTPUT_NAME: "tessera",
      LEPTOS_SITE_ROOT: "target/site",
      LEPTOS_SITE_PKG_DIR: "pkg",
      LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
      LEPTOS_RELOAD_PORT: String(port + 1),
      TESSERA_PUBLIC_URL: baseURL,
      DATABASE_URL: process.env.E2E_DATABASE_URL ?? "postgres://tessera_app:tessera@127.0.0.1:5432/tessera_e2e",
      DATABASE_ADMIN_URL: process.env.E2E_DATABASE_ADMIN_URL ?? "postgres://tessera_owner:tessera@127.0.0.1:5432/tessera_e2e",
      TESSERA_REDIS_PREFIX: `e2e:${Date.now()}:`,
      OPENAI_BASE_URL: `http://127.0.0.1:${simPort}/v1`,
      ANTHROPIC_BASE_URL: `http://127.0.0.1:${simPort}/anthropic`,
      RUST_LOG: process.env.RUST_LOG ?? "warn",
    },
    },
  ],
});
