import { readFileSync } from "node:fs";
import { expect, test } from "@playwright/test";
import { inviteStaff, open, serverCommand, signIn, signUp, uniqueEmail } from "./fixtures/pages";

test("an operator turns streaming off for one clinic, its staff get whole replies, then the operator rolls back", async ({ page, browser }) => {
  const clinic = `Stream Clinic ${Date.now()}`;
  await signUp(page, clinic, "Ada Admin", uniqueEmail("stream-admin"));
  const nav = page.getByRole("navigation", { name: "Main" });
  await nav.getByRole("link", { name: "Provider keys" }).click();
  const openai = page.getByTestId("provider-openai");
  await openai.getByLabel("API key").fill("sk-test-e2e-stream-3434");
  await openai.getByRole("button", { name: "Save" }).click();
  await expect(openai.getByTestId("key-status")).toContainText("…3434");
  await nav.getByRole("link", { name: "Agents" }).click();
  const form = page.getByRole("region", { name: "New agent" });
  // The model suggested for a new agent is the platform's default model (a flag).
  await expect(form.getByLabel("Model")).toHaveValue("gpt-4o-mini");
  await form.getByLabel("Name").fill("Front Desk");
  await form.getByRole("button", { name: "Create agent" }).click();
  await expect(page.getByTestId("agent-row").filter({ hasText: "Front Desk" })).toBeVisible();
  const { context: staffContext, staff } = await inviteStaff(page, browser, clinic, "stream-nurse");

  // An operator, made by the CLI, signs in and lands in the console (no clinic of their own).
  const email = uniqueEmail("ops");
  const out = serverCommand("operator", "add", email);
  const password = /password \(shown once\): (\S+)/.exec(out)?.[1];
  expect(password).toBeTruthy();
  const opContext = await browser.newContext();
  const op = await opContext.newPage();
  await signIn(op, email, password!);
  await expect(op).toHaveURL(/\/operator$/);
  await op.locator("body[data-hydrated]").waitFor();
  await open(op, `/operator?q=${encodeURIComponent(clinic)}`);
  await expect(op.getByLabel("Search")).toHaveValue(clinic);
  const href = await op.getByRole("link", { name: clinic }).getAttribute("href");
  expect(href).toMatch(/^\/operator\/clinics\//);
  await open(op, href!);
  const slug = (await op.getByTestId("clinic-slug").textContent())!.trim();
  expect(slug).toMatch(/^stream-clinic-/);

  // Streaming off for this clinic alone, checked with the preview first.
  await open(op, "/operator/flags/streaming_enabled");
  await op.getByRole("textbox", { name: "Rules" }).fill(`clinic ${slug} = false`);
  await op.getByLabel("Preview for a clinic (slug or name, optional)").fill(slug);
  const before = Number(await op.getByTestId("flag-version").textContent());
  await op.getByTestId("flag-preview").click();
  await expect(op.getByTestId("flag-preview-result")).toContainText(`${clinic} gets false`);
  await op.getByTestId("flag-save").click();
  await expect(op.getByTestId("flag-saved")).toContainText("Saved as version");
  await expect(op.getByTestId("flag-version")).toHaveText(String(before + 1));

  // The staff's reply arrives whole: the moment its first word shows, so does its last.
  await staff.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Chat" }).click();
  await staff.getByLabel("Agent").selectOption({ label: "Front Desk" });
  await staff.getByLabel("Message").fill("Opening hours? [sim:words=12] [sim:chunk_ms=250]");
  await staff.getByRole("button", { name: "Start" }).click();
  const replies = staff.getByTestId("message-assistant");
  await expect(replies.first()).toContainText("word1");
  expect(await replies.first().textContent()).toContain("word12");

  // The operator rolls back to the first version: replies stream again.
  await op.getByRole("button", { name: "Roll back to version 1" }).click();
  await expect(op.getByTestId("flag-version")).toHaveText(String(before + 2));
  await expect(op.getByTestId("flag-version-row").first()).toContainText("rolled back to version 1");
  const composer = staff.getByLabel("Message", { exact: true });
  await composer.fill("And on Sunday? [sim:words=40] [sim:chunk_ms=150]");
  await composer.press("Enter");
  await expect(replies.nth(1)).toContainText("word1");
  expect(await replies.nth(1).textContent()).not.toContain("word40");
  await expect(replies.nth(1)).toContainText("word40");

  // The change and the rollback are in the platform's audit log.
  await open(op, "/operator/audit?area=flag");
  await expect(op.getByTestId("audit-row").first()).toHaveAttribute("data-action", "flag.rolled_back");

  // Staff and admins are refused the console.
  const res = await staff.goto("/operator");
  expect(res?.status()).toBe(403);
  await expect(staff.getByTestId("forbidden")).toContainText("operators only");
  await staffContext.close();
  await opContext.close();
});

test("an admin reads the clinic's audit log, filters it and downloads it", async ({ page }) => {
  await signUp(page, `Audit Clinic ${Date.now()}`, "Ada Admin", uniqueEmail("audit-admin"));
  const nav = page.getByRole("navigation", { name: "Main" });
  await nav.getByRole("link", { name: "API keys" }).click();
  await page.getByLabel("Name").fill("Reports");
  await page.getByRole("button", { name: "Create key" }).click();
  await expect(page.getByTestId("new-api-key")).toBeVisible();
  // Revoking asks first: saying no keeps the key, saying yes revokes it.
  let asked = "";
  page.once("dialog", (dialog) => {
    asked = dialog.message();
    return dialog.dismiss();
  });
  await page.getByRole("button", { name: "Revoke" }).click();
  await expect.poll(() => asked).toContain("Revoke the API key Reports?");
  await expect(page.getByTestId("api-key-row")).not.toContainText("revoked");
  page.once("dialog", (dialog) => dialog.accept());
  await page.getByRole("button", { name: "Revoke" }).click();
  await expect(page.getByTestId("api-key-row")).toContainText("revoked");

  await nav.getByRole("link", { name: "Audit log" }).click();
  await expect(page.getByRole("heading", { name: "Audit log" })).toBeVisible();
  const rows = page.getByTestId("audit-row");
  await expect(rows.first()).toHaveAttribute("data-action", "api_key.revoked");
  await expect(rows.nth(1)).toHaveAttribute("data-action", "api_key.created");
  await expect(rows.first()).toContainText("Reports");

  await page.getByLabel("Kind").selectOption({ label: "API keys" });
  await page.getByRole("button", { name: "Filter" }).click();
  await expect(page).toHaveURL(/area=api_key/);
  await expect(rows).toHaveCount(2);

  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByTestId("audit-export").click(),
  ]);
  const path = await download.path();
  const text = readFileSync(path, "utf8");
  expect(text.split("\n")[0]).toBe("occurred_at,actor_kind,actor,action,target,address,before,after,id");
  expect(text).toContain("api_key.created");
});
