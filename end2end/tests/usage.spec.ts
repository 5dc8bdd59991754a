import { expect, test } from "@playwright/test";
import { open, signUp, subscribe, uniqueEmail } from "./fixtures/pages";

test("API calls go through the gateway, show on the Usage page, and the spending cap is saved", async ({ page, request }) => {
  await signUp(page, `Usage Clinic ${Date.now()}`, "Uma Admin", uniqueEmail("usage"));
  const nav = page.getByRole("navigation", { name: "Main" });
  await nav.getByRole("link", { name: "Provider keys" }).click();
  const openai = page.getByTestId("provider-openai");
  await openai.getByLabel("API key").fill("sk-test-e2e-usage-7777");
  await openai.getByRole("button", { name: "Save" }).click();
  await expect(openai.getByTestId("key-status")).toContainText("…7777");
  await nav.getByRole("link", { name: "API keys" }).click();
  await page.getByLabel("Name").fill("Usage test");
  await page.getByRole("button", { name: "Create key" }).click();
  const token = await page.getByTestId("new-api-key").inputValue();
  const headers = { Authorization: `Bearer ${token}` };

  // A JSON call and a streamed one, through Tessera to the simulator.
  const json = await request.post("/v1/chat/completions", {
    headers,
    data: { model: "gpt-4o-mini", messages: [{ role: "user", content: "When is the clinic open?" }] },
  });
  expect(json.status()).toBe(200);
  const reply = await json.json();
  expect(reply.choices[0].message.content).toContain("When is the clinic open?");
  const stream = await request.post("/v1/chat/completions", {
    headers,
    data: { model: "gpt-4o-mini", stream: true, stream_options: { include_usage: true }, messages: [{ role: "user", content: "hello" }] },
  });
  expect(stream.headers()["content-type"]).toContain("text/event-stream");
  const events = await stream.text();
  expect(events).toContain('"usage":{');
  expect(events.trim().endsWith("data: [DONE]")).toBe(true);

  // A request whose worst case cannot fit this month is refused with the allowance message.
  const huge = await request.post("/v1/chat/completions", {
    headers,
    data: { model: "gpt-4o-mini", max_tokens: 200000, messages: [{ role: "user", content: "x".repeat(900000) }] },
  });
  expect(huge.status()).toBe(429);
  expect((await huge.json()).error.message).toContain("Not enough of this month's token allowance is left");

  // The Usage page shows both calls at once.
  await nav.getByRole("link", { name: "Usage" }).click();
  await expect(page.getByTestId("usage-requests")).toHaveText("2");
  const used = reply.usage.total_tokens;
  await expect(page.getByTestId("usage-tokens")).toContainText("of 1,000,000 tokens");
  expect(Number((await page.getByTestId("usage-tokens").innerText()).split(" ")[0].replace(/,/g, ""))).toBeGreaterThan(used);

  // Without a paid plan the clinic stays within its allowance: a cap is refused, and says why.
  await expect(page.getByTestId("cap-needs-plan")).toBeVisible();
  await page.getByLabel("Continue, up to a monthly cap of").check();
  await page.getByLabel("Cap in US dollars").fill("25");
  await page.getByRole("button", { name: "Save" }).click();
  await expect(page.getByRole("alert")).toContainText("needs a paid plan");
  await subscribe(page, "starter");
  await open(page, "/settings/usage");
  await expect(page.getByTestId("cap-needs-plan")).toHaveCount(0);

  // The cap: a bad amount is refused with a message and kept; a good one is saved.
  // On a busy machine the form can still be posted by the browser itself before its handler is
  // attached, which today answers with the server function's raw result instead of the page
  // (the no-script path of this form is not built yet): the page is opened again and the
  // attempt repeated. The message itself must appear.
  await expect(async () => {
    if (!new URL(page.url()).pathname.startsWith("/settings/usage")) {
      await open(page, "/settings/usage");
    }
    await page.getByLabel("Continue, up to a monthly cap of").check();
    await page.getByLabel("Cap in US dollars").fill("lots");
    await page.getByRole("button", { name: "Save" }).click();
    await expect(page.getByRole("alert")).toContainText("is not an amount in dollars", { timeout: 3000 });
  }).toPass({ timeout: 45000 });
  await expect(page.getByLabel("Cap in US dollars")).toHaveValue("lots");
  await page.getByLabel("Cap in US dollars").fill("25");
  await page.getByRole("button", { name: "Save" }).click();
  await expect(page.getByRole("status")).toHaveText("Saved.");
  await page.reload();
  await expect(page.getByLabel("Continue, up to a monthly cap of")).toBeChecked();
  await expect(page.getByLabel("Cap in US dollars")).toHaveValue("25.00");
  // $25 at $0.003 per 1,000 tokens buys 8,333,333 tokens beyond the allowance.
  await expect(page.getByTestId("usage-tokens")).toContainText("of 9,333,333 tokens");
});
