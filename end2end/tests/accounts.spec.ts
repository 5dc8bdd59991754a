import { expect, test } from "@playwright/test";
import { PASSWORD, expectSignedInTo, open, signIn, signOut, signUp, uniqueEmail } from "./fixtures/pages";

test("a clinic signs up, invites a staff member, and staff are refused the Members page", async ({ page, browser }) => {
  const clinic = `Harbour Clinic ${Date.now()}`;
  const ownerEmail = uniqueEmail("owner");

  // Sign up a clinic: its owner lands in the app.
  await signUp(page, clinic, "Olivia Owner", ownerEmail);
  await expectSignedInTo(page, clinic);
  await expect(page.getByRole("heading", { name: "Welcome, Olivia Owner" })).toBeVisible();

  // Sign out, and back in.
  await signOut(page);
  await signIn(page, ownerEmail);
  await expectSignedInTo(page, clinic);

  // Invite a staff member from the Members page.
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Members" }).click();
  await expect(page.getByRole("heading", { name: "Members", exact: true })).toBeVisible();
  const staffEmail = uniqueEmail("nurse");
  const inviteForm = page.getByRole("region", { name: "Invite a colleague" });
  await inviteForm.getByLabel("Email").fill(staffEmail);
  await inviteForm.getByLabel("Role").selectOption("staff");
  await inviteForm.getByRole("button", { name: "Create invitation" }).click();
  const linkField = page.getByTestId("invite-link");
  await expect(linkField).toBeVisible();
  const link = await linkField.inputValue();
  expect(link).toContain("/invite/");
  await expect(page.getByTestId("invitation-row").filter({ hasText: staffEmail })).toBeVisible();

  // The staff member accepts in their own browser and is signed in.
  const staffContext = await browser.newContext();
  const staff = await staffContext.newPage();
  await open(staff, link);
  await expect(staff.getByRole("heading", { name: `Join ${clinic}` })).toBeVisible();
  await staff.getByLabel("Your name").fill("Nina Nurse");
  await staff.getByLabel("Choose a password").fill(PASSWORD);
  await staff.getByRole("button", { name: `Join ${clinic}` }).click();
  await expectSignedInTo(staff, clinic);
  // Staff land in the chat; the home page tells them their role.
  await expect(staff).toHaveURL(/\/chat$/);
  await staff.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Home" }).click();
  await expect(staff.getByTestId("my-role")).toHaveText("Staff");

  // Staff sign out and sign in again with the password they chose.
  await signOut(staff);
  await signIn(staff, staffEmail);
  await expectSignedInTo(staff, clinic);
  await expect(staff).toHaveURL(/\/chat$/);

  // Staff see no Members link, and opening the page by address is refused.
  await expect(staff.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Home" })).toBeVisible();
  await expect(staff.getByRole("link", { name: /members/i })).toHaveCount(0);
  const response = await staff.goto("/members");
  expect(response?.status()).toBe(403);
  await expect(staff.getByRole("heading", { name: "You don't have access to this page" })).toBeVisible();

  // The owner now sees the new member, and the link no longer works.
  await page.reload();
  await expect(page.getByTestId("member-row").filter({ hasText: "Nina Nurse" })).toBeVisible();
  await staff.goto(link);
  await expect(staff.getByTestId("invitation-problem")).toContainText("already been used");
  await staffContext.close();
});

test("bad input gets clear messages and nothing is lost", async ({ page }) => {
  const email = uniqueEmail("dup");
  await open(page, "/signup");
  await expect(page.getByText("Use at least 10 characters")).toBeVisible();

  // A weak password: the rule is shown, and the form keeps what was typed.
  await page.getByLabel("Clinic name").fill("Weak Clinic");
  await page.getByLabel("Your name").fill("Wendy");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("short");
  // Bypass the browser's own minlength check to reach the server's.
  await page.locator("form").evaluate((f) => f.setAttribute("novalidate", ""));
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByRole("alert")).toContainText("at least 10 characters");
  await expect(page.getByLabel("Clinic name")).toHaveValue("Weak Clinic");

  // A proper sign-up, then the same email again.
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await expectSignedInTo(page, "Weak Clinic");
  await signOut(page);
  await signUp(page, "Second Clinic", "Someone", email.toUpperCase());
  await expect(page.getByRole("alert")).toContainText("already exists");

  // A wrong password gets the generic message.
  await signIn(page, email, "not the right password");
  await expect(page.getByRole("alert")).toContainText("don't match an account");

  // An unknown invitation link gets a clear page.
  await page.goto("/invite/not-a-real-token");
  await expect(page.getByTestId("invitation-problem")).toBeVisible();

  // An unknown page is a 404.
  const res = await page.goto("/no/such/page");
  expect(res?.status()).toBe(404);
  await expect(page.getByRole("heading", { name: "Page not found" })).toBeVisible();
});

test("an admin stores a provider key and sees only its last four characters", async ({ page }) => {
  await signUp(page, `Key Clinic ${Date.now()}`, "Kim Admin", uniqueEmail("keys"));
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Provider keys" }).click();
  const openai = page.getByTestId("provider-openai");
  await expect(openai.getByTestId("key-status")).toHaveText("Not set.");
  await openai.getByLabel("API key").fill("sk-test-playwright-secret-4321");
  await openai.getByRole("button", { name: "Save" }).click();
  await expect(openai.getByTestId("key-status")).toContainText("Key ending in …4321");
  await expect(openai.getByTestId("key-status")).toContainText("by Kim Admin");

  // Test makes one real call (to the simulator) and shows what the provider said.
  await openai.getByRole("button", { name: "Test" }).click();
  await expect(openai.getByTestId("key-test-result")).toContainText("It works");
  await openai.getByLabel("API key").fill("sk-invalid-key-for-test-0000");
  await openai.getByRole("button", { name: "Replace" }).click();
  await expect(openai.getByTestId("key-status")).toContainText("…0000");
  await page.getByTestId("provider-openai").getByRole("button", { name: "Test" }).click();
  await expect(page.getByTestId("provider-openai").getByTestId("key-test-result")).toContainText(
    "Your OpenAI key was rejected: Incorrect API key provided",
  );

  // After a reload the page still shows the last four only.
  await page.reload();
  await expect(page.getByTestId("provider-openai").getByTestId("key-status")).toContainText("…0000");
  expect(await page.content()).not.toContain("playwright-secret");
  expect(await page.content()).not.toContain("invalid-key-for-test");

  await page.locator("body[data-hydrated]").waitFor();
  page.once("dialog", (dialog) => dialog.accept());
  await page.getByTestId("provider-openai").getByRole("button", { name: "Delete" }).click();
  await expect(page.getByTestId("provider-openai").getByTestId("key-status")).toHaveText("Not set.");
});

test("an admin creates an API key that works once shown, and revokes it", async ({ page, request }) => {
  await signUp(page, `API Clinic ${Date.now()}`, "Ada Admin", uniqueEmail("api"));
  const nav = page.getByRole("navigation", { name: "Main" });
  await nav.getByRole("link", { name: "Provider keys" }).click();
  const openai = page.getByTestId("provider-openai");
  await openai.getByLabel("API key").fill("sk-test-e2e-openai-5555");
  await openai.getByRole("button", { name: "Save" }).click();
  await expect(openai.getByTestId("key-status")).toContainText("…5555");

  await nav.getByRole("link", { name: "API keys" }).click();
  await page.getByLabel("Name").fill("Reception scripts");
  await page.getByRole("button", { name: "Create key" }).click();
  const token = await page.getByTestId("new-api-key").inputValue();
  expect(token).toMatch(/^tsk_/);

  const models = await request.get("/v1/models", { headers: { Authorization: `Bearer ${token}` } });
  expect(models.status()).toBe(200);
  const body = await models.json();
  expect(body.data.map((m: { id: string }) => m.id)).toContain("gpt-4o-mini");

  // After a reload only the prefix remains.
  await page.reload();
  const row = page.getByTestId("api-key-row").filter({ hasText: "Reception scripts" });
  await expect(row).toContainText(token.slice(0, 12));
  expect(await page.content()).not.toContain(token);
  // Revoking asks first (once the page is interactive); the admin confirms.
  page.once("dialog", (dialog) => dialog.accept());
  await row.getByRole("button", { name: "Revoke" }).click();
  await expect(page.getByTestId("api-key-row").filter({ hasText: "Reception scripts" })).toContainText("revoked");
  const refused = await request.get("/v1/models", { headers: { Authorization: `Bearer ${token}` } });
  expect(refused.status()).toBe(401);
  expect((await refused.json()).error.code).toBe("invalid_api_key");
});
