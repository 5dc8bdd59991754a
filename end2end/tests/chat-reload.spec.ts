import { expect, test } from "@playwright/test";
import { ownerSql, signUp, uniqueEmail } from "./fixtures/pages";

test("a reply still being generated when the page is reloaded appears once it is saved", async ({ page }) => {
  await signUp(page, `Poll Clinic ${Date.now()}`, "Pat Admin", uniqueEmail("poll"));
  await page.getByTestId("clinic-name").waitFor();
  const origin = new URL(page.url()).origin;
  const h = { Accept: "application/json", Origin: origin };
  // A conversation whose reply another request is generating.
  await page.request.post("/api/save_provider_key", { headers: h, form: { provider: "openai", key: "sk-test-poll" } });
  await page.request.post("/api/save_agent", { headers: h, form: { name: "Poller", model: "gpt-4o-mini" } });
  const home = await (await page.request.post("/api/chat_home", { headers: h })).json();
  const sent = await (await page.request.post("/api/start_conversation", { headers: h, form: { agent_id: home.agents[0].id, text: "hello" } })).json();
  const session = await (await page.request.post("/api/session", { headers: h })).json();
  const scope = `SELECT set_config('app.tenant_id', '${session.clinic.id}', true);`;
  ownerSql(`BEGIN; ${scope} UPDATE messages SET status = 'generating' WHERE id = '${sent.reply_id}'; COMMIT;`);
  // The page shows it as in progress, and picks up the reply when it is saved.
  await page.goto(`/chat/${sent.conversation_id}`);
  await page.locator("body[data-hydrated]").waitFor();
  await expect(page.getByTestId("thinking")).toBeVisible();
  ownerSql(`BEGIN; ${scope} UPDATE messages SET status = 'complete', content = 'Saved by the other request' WHERE id = '${sent.reply_id}'; COMMIT;`);
  await expect(page.getByTestId("message-assistant")).toContainText("Saved by the other request", { timeout: 8000 });
});
