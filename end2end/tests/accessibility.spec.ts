import AxeBuilder from "@axe-core/playwright";
import { expect, test, type Page } from "@playwright/test";

import { open, serverCommand, signIn, signOut, signUp, uniqueEmail } from "./fixtures/pages";

// Every page passes an automated axe-core scan (WCAG 2.1 A and AA rules) with no violations, in
// the light and the dark theme, at desktop and at phone width.
const SIGNED_OUT = ["/signin", "/signup"];
const ADMIN_PAGES = [
  "/",
  "/chat",
  "/agents",
  "/knowledge",
  "/members",
  "/settings/keys",
  "/settings/api-keys",
  "/settings/usage",
  "/settings/billing",
  "/settings/audit",
];

async function scan(page: Page, path: string, label: string) {
  await open(page, path);
  const result = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
  const found = result.violations.map(
    (v) => `${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.map((n) => n.target.join(" ")).slice(0, 5).join("\n    ")}`,
  );
  // The scan ran over the page's content (a page that failed to render would pass nothing).
  expect(result.passes.length, `${label} ${path}`).toBeGreaterThan(10);
  expect(found, `${label} ${path}`).toEqual([]);
}

for (const scheme of ["light", "dark"] as const) {
  for (const width of [1280, 390]) {
    test(`every page passes axe in the ${scheme} theme at ${width}px`, async ({ page }) => {
      await page.setViewportSize({ width, height: 900 });
      await page.emulateMedia({ colorScheme: scheme });
      for (const path of SIGNED_OUT) await scan(page, path, `${scheme} ${width}px`);
      await signUp(page, `Axe Clinic ${Date.now()}`, "Ada Admin", uniqueEmail(`axe-${scheme}-${width}`));
      await expect(page.getByTestId("clinic-name")).toBeVisible();
      for (const path of ADMIN_PAGES) await scan(page, path, `${scheme} ${width}px`);
    });
  }
}

// The operator console, in both themes: light at desktop width, dark at phone width.
for (const [scheme, width] of [["light", 1280], ["dark", 390]] as const) {
  test(`the operator console passes axe in the ${scheme} theme at ${width}px`, async ({ page }) => {
    // A clinic for the console to show.
    await signUp(page, `Axe Ops Clinic ${Date.now()}`, "Ada Admin", uniqueEmail(`axe-ops-clinic-${scheme}`));
    await expect(page.getByTestId("clinic-name")).toBeVisible();
    await signOut(page);
    const email = uniqueEmail(`axe-ops-${scheme}`);
    const out = serverCommand("operator", "add", email);
    const password = /password \(shown once\): (\S+)/.exec(out)?.[1];
    expect(password).toBeTruthy();
    await page.setViewportSize({ width, height: 900 });
    await page.emulateMedia({ colorScheme: scheme });
    await signIn(page, email, password!);
    await expect(page).toHaveURL(/\/operator$/);
    await scan(page, "/operator", `${scheme} ${width}px`);
    const clinic = await page.getByRole("link", { name: /Axe Ops Clinic/ }).first().getAttribute("href");
    await scan(page, clinic!, `${scheme} ${width}px`);
    for (const path of ["/operator/flags", "/operator/flags/streaming_enabled", "/operator/audit"]) {
      await scan(page, path, `${scheme} ${width}px`);
    }
  });
}
