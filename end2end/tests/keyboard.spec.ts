import { expect, test, type Locator, type Page } from "@playwright/test";

import { open, PASSWORD, signOut, signUp, uniqueEmail } from "./fixtures/pages";

/** The focused element, described, when it does not show that it has the focus (no outline, no
 * ring); null when it does, or when nothing has the focus. */
async function focusHidden(page: Page): Promise<string | null> {
  return page.evaluate(() => {
    const el = document.activeElement as HTMLElement | null;
    if (!el || el === document.body) return null;
    const s = getComputedStyle(el);
    const outline = s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0;
    if (outline || s.boxShadow !== "none") return null;
    const name = (el.getAttribute("aria-label") || el.textContent || "").trim().slice(0, 40);
    return `<${el.tagName.toLowerCase()}> "${name}"`;
  });
}

/** Presses Tab (Shift+Tab with `back`) until `target` has the focus, checking that every
 * element the focus lands on on the way shows it. */
async function tabTo(page: Page, target: Locator, back = false, max = 60) {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(back ? "Shift+Tab" : "Tab");
    expect(await focusHidden(page), "an element took the focus without showing it").toBeNull();
    if (await target.evaluate((el) => el === document.activeElement)) return;
  }
  throw new Error(`Tab did not reach ${target} in ${max} presses`);
}

test("by keyboard alone: sign in, set up, chat, rate a reply, the phone drawer; the focus always shows", async ({ page }) => {
  const email = uniqueEmail("keyboard");
  await signUp(page, `Keyboard Clinic ${Date.now()}`, "Kay Board", email);
  await expect(page.getByTestId("clinic-name")).toBeVisible();
  await signOut(page);

  // Sign in: Tab to the fields, type, Enter.
  await open(page, "/signin");
  await tabTo(page, page.getByLabel("Email"));
  await page.keyboard.type(email);
  await tabTo(page, page.getByLabel("Password"));
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("clinic-name")).toBeVisible();

  // A provider key and an agent, typed and submitted with Enter.
  await open(page, "/settings/keys");
  const openai = page.getByTestId("provider-openai");
  await tabTo(page, openai.getByLabel("API key"));
  await page.keyboard.type("sk-test-e2e-keyboard-7070");
  await page.keyboard.press("Enter");
  await expect(openai.getByTestId("key-status")).toContainText("…7070");
  await open(page, "/agents");
  const form = page.getByRole("region", { name: "New agent" });
  await tabTo(page, form.getByLabel("Name"));
  await page.keyboard.type("Helper");
  await tabTo(page, form.getByLabel("Model"));
  await page.keyboard.press("ControlOrMeta+A");
  await page.keyboard.type("gpt-4o-mini");
  await tabTo(page, form.getByRole("button", { name: "Create agent" }));
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("agent-row").filter({ hasText: "Helper" })).toBeVisible();

  // The chat: Tab to the composer, type, Enter sends; the reply comes.
  await open(page, "/chat");
  await tabTo(page, page.getByLabel("Message"));
  await page.keyboard.type("Where are the spare gloves kept?");
  await page.keyboard.press("Enter");
  await expect(page).toHaveURL(/\/chat\/[0-9a-f-]{36}$/);
  const reply = page.getByTestId("message-assistant").first();
  await expect(reply).toContainText("Simulated reply from gpt-4o-mini: Where are the spare gloves kept?");

  // Rate the reply with Space on its button (back from the composer, below the messages).
  const good = reply.getByRole("button", { name: "Good reply" });
  await tabTo(page, good, true);
  await page.keyboard.press("Space");
  await expect(good).toHaveAttribute("aria-pressed", "true");

  // Phone width: the conversations are a drawer, opened with Enter on its button and closed
  // with Escape, which gives the focus back to the button.
  await page.setViewportSize({ width: 390, height: 844 });
  await open(page, new URL(page.url()).pathname);
  const toggle = page.getByRole("button", { name: "Conversations" });
  await tabTo(page, toggle);
  await page.keyboard.press("Enter");
  await expect(page.getByRole("button", { name: "Close conversations" })).toHaveAttribute("aria-expanded", "true");
  const sidebar = page.getByRole("complementary", { name: "Conversations" });
  await tabTo(page, sidebar.getByTestId("new-chat"));
  await page.keyboard.press("Escape");
  await expect(sidebar).toBeHidden();
  await expect(toggle).toBeFocused();
  await expect(toggle).toHaveAttribute("aria-expanded", "false");
});
