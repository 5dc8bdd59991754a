import { defineConfig, devices } from "@playwright/test";

import { baseURL, serverBin, serverEnv, simBin, simPort, webhookSecret } from "./env";

// The server under test: the binary `cargo leptos build` made, on its own port, against its
// own database (recreated by scripts/test.sh) and its own Redis key prefix (see env.ts).
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
      env: {
        ...(process.env as Record<string, string>),
        SIM_STRIPE_WEBHOOK_URL: `${baseURL}/webhooks/stripe`,
        SIM_STRIPE_WEBHOOK_SECRET: webhookSecret,
      },
    },
    {
    command: `${serverBin} serve`,
    cwd: "..",
    url: `${baseURL}/readyz`,
    timeout: 60_000,
    reuseExistingServer: false,
    stdout: "pipe",
    stderr: "pipe",
    env: serverEnv,
    },
  ],
});
