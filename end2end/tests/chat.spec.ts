import { expect, test } from "@playwright/test";
import { inviteStaff, open, signUp, subscribe, uniqueEmail } from "./fixtures/pages";

test("an admin creates an agent; staff chat with streaming, stop a reply, reload, and see the allowance message", async ({ page, browser }) => {
  const clinic = `Chat Clinic ${Date.now()}`;
  await signUp(page, clinic, "Ada Admin", uniqueEmail("chat-admin"));
  const nav = page.getByRole("navigation", { name: "Main" });
  // A new clinic's admin is shown what to do first; nothing is done yet.
  await expect(page.getByTestId("get-started")).toContainText("0 of 4 done");
  for (const step of ["step-key", "step-agent", "step-colleague", "step-conversation"]) {
    await expect(page.getByTestId(step)).toHaveAttribute("data-done", "false");
  }
  await expect(page.getByTestId("step-agent").getByRole("link")).toHaveAttribute("href", "/agents");
  await nav.getByRole("link", { name: "Provider keys" }).click();
  const openai = page.getByTestId("provider-openai");
  await openai.getByLabel("API key").fill("sk-test-e2e-chat-1212");
  await openai.getByRole("button", { name: "Save" }).click();
  await expect(openai.getByTestId("key-status")).toContainText("…1212");

  // The admin creates an agent.
  await nav.getByRole("link", { name: "Agents" }).click();
  const form = page.getByRole("region", { name: "New agent" });
  await form.getByLabel("Name").fill("Front Desk");
  await form.getByLabel("Description").fill("Opening hours and bookings");
  await form.getByLabel("Instructions (system prompt)").fill("You answer for the front desk. Be brief.");
  await form.getByLabel("Model").fill("gpt-4o-mini");
  await form.getByRole("button", { name: "Create agent" }).click();
  await expect(page.getByTestId("agent-row").filter({ hasText: "Front Desk" })).toContainText("agent:front-desk");
  await expect(page.getByTestId("agent-limit")).toHaveText("1 of 3 agents on the Starter plan.");
  // The form says what it made and is empty again for the next agent.
  await expect(page.getByTestId("agent-created")).toContainText("Created the agent Front Desk.");
  await expect(form.getByLabel("Name")).toHaveValue("");
  await expect(form.getByLabel("Description")).toHaveValue("");

  // The checklist has ticked the key and the agent by itself.
  await open(page, "/");
  await expect(page.getByTestId("get-started")).toContainText("2 of 4 done");
  await expect(page.getByTestId("step-key")).toHaveAttribute("data-done", "true");
  await expect(page.getByTestId("step-agent")).toHaveAttribute("data-done", "true");
  await expect(page.getByTestId("step-colleague")).toHaveAttribute("data-done", "false");

  // ...and invites a staff member.
  const { context: staffContext, staff } = await inviteStaff(page, browser, clinic, "chat-nurse");

  // Staff start a conversation; the reply streams in word by word.
  await staff.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Chat" }).click();
  await staff.getByLabel("Agent").selectOption({ label: "Front Desk — Opening hours and bookings" });
  await staff.getByLabel("Message").fill("When are you open on Saturday? [sim:chunk_ms=200]");
  await staff.getByRole("button", { name: "Start" }).click();
  await expect(staff).toHaveURL(/\/chat\/[0-9a-f-]{36}$/);
  await expect(staff.getByTestId("conversation-title")).toHaveText("When are you open on Saturday? [sim:chunk_ms=200]");
  const replies = staff.getByTestId("message-assistant");
  // Part of the reply is on the page while the rest is still coming (Stop is offered).
  await expect(replies.first()).toContainText("Simulated reply");
  await expect(staff.getByRole("button", { name: "Stop" })).toBeVisible();
  await expect(replies.first()).toContainText("Simulated reply from gpt-4o-mini: When are you open on Saturday?");
  await expect(staff.getByRole("button", { name: "Send" })).toBeVisible();

  // Every step done: the admin's checklist has gone.
  await open(page, "/");
  await expect(page.getByRole("heading", { name: "Welcome, Ada Admin" })).toBeVisible();
  await expect(page.getByTestId("get-started")).toHaveCount(0);

  // A second, long reply is stopped midway: what was generated stays.
  const composer = staff.getByLabel("Message", { exact: true });
  await composer.fill("Tell me everything [sim:words=400] [sim:chunk_ms=40]");
  await composer.press("Enter");
  await expect(replies.nth(1)).toContainText("word5");
  await staff.getByRole("button", { name: "Stop" }).click();
  await expect(replies.nth(1).getByTestId("stopped")).toBeVisible();
  await expect(replies.nth(1)).not.toContainText("word400");

  // Shift+Enter adds a line instead of sending.
  await composer.fill("first line");
  await composer.press("Shift+Enter");
  await composer.pressSequentially("second line");
  await expect(composer).toHaveValue("first line\nsecond line");
  await composer.fill("");

  // After a reload the conversation is there, rendered on the server.
  await staff.reload();
  await staff.locator("body[data-hydrated]").waitFor();
  await expect(staff.getByTestId("message-user")).toHaveCount(2);
  await expect(replies.first()).toContainText("Simulated reply from gpt-4o-mini");
  await expect(replies.nth(1)).toContainText("word1 word2");
  await expect(replies.nth(1).getByTestId("stopped")).toBeVisible();

  // The clinic goes past its allowance, as a paying clinic may with a spending cap: the admin
  // subscribes, allows up to $10 beyond it, and calls through the API use 1,100,000 tokens of
  // the 1,000,000 included.
  await subscribe(page, "starter");
  await nav.getByRole("link", { name: "API keys" }).click();
  await page.getByLabel("Name").fill("Reports");
  await page.getByRole("button", { name: "Create key" }).click();
  const token = await page.getByTestId("new-api-key").inputValue();
  await nav.getByRole("link", { name: "Usage" }).click();
  await page.getByLabel("Continue, up to a monthly cap of").check();
  await page.getByLabel("Cap in US dollars").fill("10");
  await page.getByRole("button", { name: "Save" }).click();
  await expect(page.getByRole("status")).toHaveText("Saved.");
  for (let i = 0; i < 11; i++) {
    const res = await page.request.post("/v1/chat/completions", {
      headers: { Authorization: `Bearer ${token}` },
      data: { model: "gpt-4o-mini", max_tokens: 100000, messages: [{ role: "user", content: `Report ${i} [sim:words=100000]` }] },
    });
    expect(res.status()).toBe(200);
  }
  // Opened afresh and waited on until interactive, so the form below posts through the page.
  await open(page, "/settings/usage");
  // The dashboard shows the staff member's chat, by agent and by person.
  const byAgent = page.getByTestId("usage-chart").filter({ hasText: "Tokens per day by agent" });
  await expect(byAgent.locator("svg rect").first()).toBeVisible();
  await expect(byAgent).toContainText("Front Desk");
  await expect(page.getByTestId("usage-chart").filter({ hasText: "by person" })).toContainText("Nina Nurse");
  // Then the admin stops calls beyond the allowance: the chat says it is used up, and who can
  // change that.
  await page.getByLabel("Stop model calls until next month").check();
  await page.getByRole("button", { name: "Save" }).click();
  await expect(page.getByRole("status")).toHaveText("Saved.");
  await expect(page.getByTestId("usage-banner")).toContainText("Monthly token allowance used");

  await composer.fill("One more question");
  await composer.press("Enter");
  await expect(staff.getByTestId("reply-error")).toContainText("Monthly token allowance used");
  await expect(staff.getByTestId("reply-error")).toContainText("An admin can raise the monthly spending cap");
  await staffContext.close();
});
