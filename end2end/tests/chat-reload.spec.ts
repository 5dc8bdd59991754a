import { expect, test } from "@playwright/test";
import { open, signUp, uniqueEmail } from "./fixtures/pages";

// A reply keeps generating when its page goes: a page opened meanwhile (another tab, a reload)
// shows what has come so far and follows the rest live.
test("a reply being generated shows live in another tab and keeps generating across a reload", async ({ page, context }) => {
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

  // A second tab shows it live: the words so far, then the rest as they come.
  const other = await context.newPage();
  await open(other, page.url());
  const mirrored = other.getByTestId("message-assistant").first();
  await expect(mirrored).toContainText("word3");
  await expect(mirrored).not.toContainText("word40");
  await expect(mirrored).toContainText("word40", { timeout: 15_000 });
  await expect(reply).toContainText("word40");
  await expect(other.getByTestId("thinking")).toHaveCount(0);
  await other.close();

  // Reloading while a reply streams shows what has come so far, then the rest: the reply did
  // not stop when the page went.
  await expect(page.getByRole("button", { name: "Send" })).toBeVisible();
  const composer = page.getByLabel("Message", { exact: true });
  await composer.fill("And again [sim:words=60] [sim:chunk_ms=150]");
  await composer.press("Enter");
  const second = page.getByTestId("message-assistant").nth(1);
  await expect(second).toContainText("word3");
  await page.reload();
  await page.locator("body[data-hydrated]").waitFor();
  const reloaded = page.getByTestId("message-assistant").nth(1);
  await expect(reloaded).toContainText("word1 word2 word3");
  await expect(page.getByRole("button", { name: "Stop" })).toBeVisible();
  await expect(reloaded).toContainText("word60", { timeout: 20_000 });
  await expect(reloaded.getByTestId("stopped")).toHaveCount(0);
  // And after another reload it is there whole, saved.
  await page.reload();
  await page.locator("body[data-hydrated]").waitFor();
  await expect(page.getByTestId("message-assistant").nth(1)).toContainText("word58 word59 word60");
  // The composer works again: the conversation is not stuck.
  await expect(page.getByRole("button", { name: "Send" })).toBeVisible();
  await composer.fill("Short one");
  await composer.press("Enter");
  await expect(page.getByTestId("message-assistant").nth(2)).toContainText("Simulated reply from gpt-4o-mini: Short one");
});
