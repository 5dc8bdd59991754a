import { expect, test } from "@playwright/test";
import { open, signUp, uniqueEmail } from "./fixtures/pages";

// A reply being generated is marked so by the server; a page opened meanwhile (another tab, a
// reload) waits for it instead of asking for it again and showing "Thinking…" for ever.
test("a reply being generated shows in another tab and survives a reload of the page", async ({ page, context }) => {
  await signUp(page, `Reload Clinic ${Date.now()}`, "Pat Admin", uniqueEmail("reload"));
  await expect(page.getByTestId("clinic-name")).toBeVisible();
  const nav = page.getByRole("navigation", { name: "Main" });
  await nav.getByRole("link", { name: "Provider keys" }).click();
  const openai = page.getByTestId("provider-openai");
  await openai.getByLabel("API key").fill("sk-test-e2e-reload-3434");
  await openai.getByRole("button", { name: "Save" }).click();
  await expect(openai.getByTestId("key-status")).toContainText("…3434");
  await nav.getByRole("link", { name: "Agents" }).click();
  const form = page.getByRole("region", { name: "New agent" });
  await form.getByLabel("Name").fill("Reloader");
  await form.getByLabel("Model").fill("gpt-4o-mini");
  await form.getByRole("button", { name: "Create agent" }).click();
  await expect(page.getByTestId("agent-row").filter({ hasText: "Reloader" })).toBeVisible();

  // A slow reply (40 words, 150 ms apart: about 6 s) starts streaming in the first tab.
  await nav.getByRole("link", { name: "Chat" }).click();
  await page.getByLabel("Message").fill("Slow please [sim:words=40] [sim:chunk_ms=150]");
  await page.getByRole("button", { name: "Start" }).click();
  await expect(page).toHaveURL(/\/chat\/[0-9a-f-]{36}$/);
  const reply = page.getByTestId("message-assistant").first();
  await expect(reply).toContainText("word3");

  // A second tab shows it in progress, then the whole reply once the first tab has it.
  const other = await context.newPage();
  await open(other, page.url());
  await expect(other.getByTestId("thinking")).toBeVisible();
  await expect(reply).toContainText("word40");
  await expect(other.getByTestId("message-assistant").first()).toContainText("word40", { timeout: 10_000 });
  await expect(other.getByTestId("thinking")).toHaveCount(0);
  await other.close();

  // Reloading while a reply streams shows what was saved of it, not "Thinking…".
  const composer = page.getByLabel("Message", { exact: true });
  await composer.fill("And again [sim:words=60] [sim:chunk_ms=150]");
  await composer.press("Enter");
  const second = page.getByTestId("message-assistant").nth(1);
  await expect(second).toContainText("word3");
  await page.reload();
  await page.locator("body[data-hydrated]").waitFor();
  await expect(page.getByTestId("thinking")).toHaveCount(0, { timeout: 10_000 });
  await expect(page.getByTestId("message-assistant").nth(1)).toContainText("word1 word2 word3");
  // The composer works again: the conversation is not stuck.
  await composer.fill("Short one");
  await composer.press("Enter");
  await expect(page.getByTestId("message-assistant").nth(2)).toContainText("Simulated reply from gpt-4o-mini: Short one");
});
