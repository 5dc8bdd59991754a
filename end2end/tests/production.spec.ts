import { expect, test } from "@playwright/test";

import { open } from "./fixtures/pages";

// Served like a production web app: the page under a Content Security Policy (open() fails on
// any violation), its wasm, JavaScript and CSS named by their content's hash, cached for a
// year and compressed.
test("static files are content-hashed, cached for good and compressed", async ({ page }) => {
  const assets: { url: string; cache: string; encoding: string }[] = [];
  page.on("response", async (res) => {
    if (new URL(res.url()).pathname.startsWith("/pkg/")) {
      const headers = await res.allHeaders();
      assets.push({ url: res.url(), cache: headers["cache-control"] ?? "", encoding: headers["content-encoding"] ?? "" });
    }
  });
  const res = await open(page, "/signin");
  const policy = res?.headers()["content-security-policy"] ?? "";
  expect(policy).toContain("frame-ancestors 'none'");
  expect(policy).toMatch(/'nonce-[^']+'/);
  expect(res?.headers()["x-request-id"]).toMatch(/^[0-9a-f]{32}$/);

  const names = assets.map((a) => new URL(a.url).pathname);
  for (const ext of ["wasm", "js", "css"]) {
    expect(names.some((n) => new RegExp(`^/pkg/tessera\\.[A-Za-z0-9_-]+\\.${ext}$`).test(n)), `${ext} in ${names}`).toBe(true);
  }
  for (const a of assets) {
    expect(a.cache, a.url).toContain("immutable");
    expect(a.cache, a.url).toContain("max-age=31536000");
  }
  const wasm = assets.find((a) => a.url.endsWith(".wasm"));
  expect(["br", "gzip"]).toContain(wasm?.encoding);
});
