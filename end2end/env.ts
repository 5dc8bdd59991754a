// The environment of the server under test, shared by the Playwright configuration (which
// starts it) and the fixtures (which run its subcommands, such as `stripe-sync`).
export const port = Number(process.env.E2E_PORT ?? 3100);
export const baseURL = `http://127.0.0.1:${port}`;
export const serverBin = process.env.TESSERA_SERVER_BIN ?? "../target/debug/server";
// The simulator of the paid APIs (OpenAI, Anthropic, Stripe; testkit), so no test reaches a
// real provider or Stripe.
export const simPort = port + 99;
export const simURL = `http://127.0.0.1:${simPort}`;
export const simBin = process.env.TESSERA_SIM_BIN ?? "../target/debug/provider-sim";
export const webhookSecret = "whsec_e2e";

export const serverEnv: Record<string, string> = {
  ...(process.env as Record<string, string>),
  LEPTOS_OUTPUT_NAME: "tessera",
  LEPTOS_SITE_ROOT: process.env.LEPTOS_SITE_ROOT ?? "target/site",
  LEPTOS_SITE_PKG_DIR: "pkg",
  // cargo-leptos names the wasm, JavaScript and CSS by their content's hash (hash-files in
  // Cargo.toml) and writes the hashes next to the server binary.
  LEPTOS_HASH_FILES: "true",
  LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
  LEPTOS_RELOAD_PORT: String(port + 1),
  TESSERA_PUBLIC_URL: baseURL,
  DATABASE_URL: process.env.E2E_DATABASE_URL ?? "postgres://tessera_app:tessera@127.0.0.1:5432/tessera_e2e",
  DATABASE_ADMIN_URL: process.env.E2E_DATABASE_ADMIN_URL ?? "postgres://tessera_owner:tessera@127.0.0.1:5432/tessera_e2e",
  TESSERA_REDIS_PREFIX: `e2e:${Date.now()}:`,
  OPENAI_BASE_URL: `${simURL}/v1`,
  ANTHROPIC_BASE_URL: `${simURL}/anthropic`,
  STRIPE_SECRET_KEY: "sk_test_e2e",
  STRIPE_WEBHOOK_SECRET: webhookSecret,
  STRIPE_API_BASE: `${simURL}/stripe/`,
  RUST_LOG: process.env.RUST_LOG ?? "warn",
  // Every test signs up clinics of its own, all from this one address.
  TESSERA_SIGNUPS_PER_HOUR: "1000",
};
