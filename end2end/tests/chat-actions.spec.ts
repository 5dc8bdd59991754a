import AxeBuilder from "@axe-core/playwright";
import { expect, test, type Page } from "@playwright/test";

import { open, signUp, uniqueEmail } from "./fixtures/pages";

/** A new clinic's admin with an OpenAI key and the agent Helper, on the chat page. */
async function clinicWithAgent(page: Page, who: string) {
  await signUp(page, `Chat Actions ${Date.now()}`, "Ada Admin", uniqueEmail(who));
  await expect(page.getByTestId("clinic-name")).toBeVisible();
  await open(page, "/settings/keys");
  const openai = page.getByTestId("provider-openai");
  await openai.getByLabel("API key").fill("sk-test-e2e-actions-5656");
  await openai.getByRole("button", { name: "Save" }).click();
  await expect(openai.getByTestId("key-status")).toContainText("…5656");
  await open(page, "/agents");
  const form = page.getByRole("region", { name: "New agent" });
  await form.getByLabel("Name").fill("Helper");
  await form.getByLabel("Description").fill("Answers anything");
  await form.getByLabel("Model").fill("gpt-4o-mini");
  await form.getByRole("button", { name: "Create agent" }).click();
  await expect(page.getByTestId("agent-row").filter({ hasText: "Helper" })).toBeVisible();
  await open(page, "/chat");
}

async function expectNoAxeViolations(page: Page, label: string) {
  const result = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
  const found = result.violations.map((v) => `${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.map((n) => n.target.join(" ")).slice(0, 5).join("\n    ")}`);
  expect(result.passes.length, label).toBeGreaterThan(10);
  expect(found, label).toEqual([]);
}

test("the chat: sidebar, search, Markdown and copy, regenerate, edit and resend, feedback the admin sees, rename", async ({ page, context }) => {
  await context.grantPermissions(["clipboard-read", "clipboard-write"]);
  await clinicWithAgent(page, "actions");
  const sidebar = page.getByRole("complementary", { name: "Conversations" });
  await expect(sidebar.getByTestId("no-conversations")).toBeVisible();

  // A new chat: the agent at the top, the composer at the bottom; Enter sends.
  await expect(page.getByTestId("new-chat-intro")).toContainText("Ask Helper anything.");
  await page.getByLabel("Message").fill("Where is the defibrillator kept?");
  await page.getByLabel("Message").press("Enter");
  await expect(page).toHaveURL(/\/chat\/[0-9a-f-]{36}$/);
  const replies = page.getByTestId("message-assistant");
  await expect(replies.first()).toContainText("Simulated reply from gpt-4o-mini: Where is the defibrillator kept?");
  await expect(replies.first().locator(".byline")).toContainText("Helper");
  await expect(page.getByTestId("message-user").locator(".byline")).toContainText("You");
  await expect(sidebar.getByTestId("conversation-row")).toHaveCount(1);
  await expect(sidebar.getByRole("link", { name: /Where is the defibrillator kept/ })).toHaveAttribute("aria-current", "page");

  // A second conversation from the sidebar, answered in Markdown: a heading, a table, and a
  // code block with its language and a Copy button.
  await sidebar.getByTestId("new-chat").click();
  await expect(page).toHaveURL(/\/chat$/);
  await page.getByLabel("Message").fill("Saturday opening times [sim:markdown]");
  await page.getByRole("button", { name: "Start" }).click();
  await expect(page).toHaveURL(/\/chat\/[0-9a-f-]{36}$/);
  const md = page.getByTestId("message-assistant").first();
  await expect(md.getByRole("heading", { name: "Saturday hours" })).toBeVisible();
  await expect(md.getByRole("table")).toContainText("closed");
  await expect(md.locator(".code-lang")).toHaveText("python");
  await md.locator(".copy-code").click();
  await expect(md.locator(".copy-code")).toHaveText("Copied");
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe('print("open")\n');
  // Copy the whole reply: its Markdown.
  await md.getByRole("group", { name: "Reply actions" }).getByRole("button", { name: "Copy" }).click();
  expect(await page.evaluate(() => navigator.clipboard.readText())).toMatch(/^## Saturday hours\n\n- Front desk/);
  // Newest first in the sidebar.
  await expect(sidebar.getByTestId("conversation-row")).toHaveCount(2);
  await expect(sidebar.getByTestId("conversation-row").first()).toContainText("Saturday opening times");

  // A conversation page with messages passes axe.
  await expectNoAxeViolations(page, "conversation page, light, 1280px");

  // Search finds a conversation by a word in a reply, with the text around it.
  await sidebar.getByLabel("Search conversations").fill("sunday");
  await expect(sidebar.getByTestId("conversation-row")).toHaveCount(1);
  await expect(sidebar.getByTestId("snippet")).toContainText("Sunday | closed");
  await sidebar.getByLabel("Search conversations").fill("zebra");
  await expect(sidebar.getByTestId("no-conversations")).toHaveText("No conversation has those words.");
  await sidebar.getByLabel("Search conversations").fill("defibrillator");
  await expect(sidebar.getByTestId("conversation-row")).toHaveCount(1);
  await sidebar.getByRole("link", { name: /defibrillator/ }).click();
  await expect(page.getByTestId("conversation-title")).toHaveText("Where is the defibrillator kept?");
  await sidebar.getByLabel("Search conversations").fill("");
  await expect(sidebar.getByTestId("conversation-row")).toHaveCount(2);

  // Regenerate the last reply: it is generated again (Stop shows while it comes).
  const first = page.getByTestId("message-assistant");
  const regenerated = page.waitForResponse((r) => r.url().includes("/api/regenerate_reply"));
  await first.getByRole("button", { name: "Regenerate" }).click();
  expect((await regenerated).status()).toBe(200);
  // The new reply has ended once it offers its actions again.
  await expect(first.getByRole("group", { name: "Reply actions" })).toBeVisible();
  await expect(page.getByRole("button", { name: "Send" })).toBeVisible();
  await expect(first).toHaveCount(1);
  await expect(first).toContainText("Simulated reply from gpt-4o-mini: Where is the defibrillator kept?");

  // Edit the last question and resend: the question reads anew, and so does its answer.
  await page.getByTestId("message-user").getByRole("button", { name: "Edit" }).click();
  await page.getByLabel("Edit your question").fill("Where is the first aid kit?");
  await page.getByRole("button", { name: "Save and send" }).click();
  await expect(page.getByTestId("message-user")).toHaveCount(1);
  await expect(page.getByTestId("message-user")).toContainText("Where is the first aid kit?");
  await expect(first).toHaveCount(1);
  await expect(first).toContainText("Simulated reply from gpt-4o-mini: Where is the first aid kit?");

  // Thumbs down with a comment; kept across a reload.
  await first.getByTestId("thumb-down").click();
  await expect(first.getByTestId("thumb-down")).toHaveAttribute("aria-pressed", "true");
  await first.getByLabel(/What made it good or bad/).fill("Too vague about the floor");
  await first.getByRole("button", { name: "Send feedback" }).click();
  await expect(first.getByTestId("feedback-thanks")).toBeVisible();
  await page.reload();
  await page.locator("body[data-hydrated]").waitFor();
  await expect(page.getByTestId("message-assistant").getByTestId("thumb-down")).toHaveAttribute("aria-pressed", "true");

  // Rename in place; the sidebar follows.
  await page.getByRole("button", { name: "Rename conversation" }).click();
  await page.getByLabel("Title").fill("First aid kit");
  await page.getByLabel("Title").press("Enter");
  await expect(page.getByTestId("conversation-title")).toHaveText("First aid kit");
  await expect(sidebar.getByRole("link", { name: /First aid kit/ })).toBeVisible();

  // The admin sees the feedback per agent (not the conversation).
  await open(page, "/agents");
  const row = page.getByTestId("feedback-row").filter({ hasText: "Helper" });
  await expect(row.getByTestId("feedback-up")).toHaveText("0");
  await expect(row.getByTestId("feedback-down")).toHaveText("1");
  await expect(row.getByTestId("feedback-comment")).toContainText("Too vague about the floor");
  await expect(page.getByTestId("agent-feedback")).not.toContainText("first aid kit");

  // Delete the conversation (after confirming): back to a new chat, one conversation left.
  await open(page, "/chat");
  await sidebar.getByRole("link", { name: /First aid kit/ }).click();
  page.once("dialog", (d) => d.accept());
  await page.getByRole("button", { name: "Delete conversation" }).click();
  await expect(page).toHaveURL(/\/chat$/);
  await expect(sidebar.getByTestId("conversation-row")).toHaveCount(1);
});

test("at phone width the conversations are a drawer, and the chat passes axe in the dark theme", async ({ page }) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.emulateMedia({ colorScheme: "dark" });
  await clinicWithAgent(page, "drawer");
  const sidebar = page.getByRole("complementary", { name: "Conversations" });
  const toggle = page.getByRole("button", { name: "Conversations" });
  await expect(sidebar).toBeHidden();
  await page.getByLabel("Message").fill("Phone question");
  await page.getByRole("button", { name: "Start" }).click();
  await expect(page.getByTestId("message-assistant").first()).toContainText("Simulated reply from gpt-4o-mini: Phone question");
  await expectNoAxeViolations(page, "conversation page, dark, 390px");

  // The drawer opens over the conversation and closes on choosing one.
  await toggle.click();
  await expect(sidebar).toBeVisible();
  await expect(page.getByRole("button", { name: "Close conversations" })).toHaveAttribute("aria-expanded", "true");
  await expect(page.getByTestId("messages")).toBeHidden();
  await sidebar.getByTestId("new-chat").click();
  await expect(sidebar).toBeHidden();
  await expect(page).toHaveURL(/\/chat$/);
  await page.getByRole("button", { name: "Conversations" }).click();
  await sidebar.getByRole("link", { name: /Phone question/ }).click();
  await expect(sidebar).toBeHidden();
  await expect(page.getByTestId("conversation-title")).toHaveText("Phone question");
  // Nothing is wider than the screen.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow).toBeLessThanOrEqual(0);
});
