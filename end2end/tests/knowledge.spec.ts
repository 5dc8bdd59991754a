import { expect, test } from "@playwright/test";
import { PASSWORD, inviteStaff, signUp, uniqueEmail } from "./fixtures/pages";

const PRICES = `# Price list

## Vaccinations

A flu shot costs 25 euros. The tetanus booster costs 40 euros.

## Consultations

A standard consultation costs 60 euros and lasts twenty minutes.
`;

const HOURS = "<html><body><h1>Opening hours</h1><p>We open at 8am on weekdays and at 9am on Saturdays.</p></body></html>";

test("an admin uploads documents and watches them become ready; staff ask and see the cited passage", async ({ page, browser }) => {
  const clinic = `Knowledge Clinic ${Date.now()}`;
  await signUp(page, clinic, "Ada Admin", uniqueEmail("knowledge-admin"));
  const nav = page.getByRole("navigation", { name: "Main" });

  // Without an embedding provider, the page says search is by words only.
  await nav.getByRole("link", { name: "Knowledge" }).click();
  await expect(page.getByTestId("retrieval-mode")).toContainText("found by their words only");
  await expect(page.getByTestId("no-documents")).toBeVisible();

  await nav.getByRole("link", { name: "Provider keys" }).click();
  const openai = page.getByTestId("provider-openai");
  await openai.getByLabel("API key").fill("sk-test-e2e-knowledge-4242");
  await openai.getByRole("button", { name: "Save" }).click();
  await expect(openai.getByTestId("key-status")).toContainText("…4242");

  // Several files at once, a progress bar and an answer per file.
  await nav.getByRole("link", { name: "Knowledge" }).click();
  await expect(page.getByTestId("retrieval-mode")).toContainText("found by meaning");
  await page.locator("body[data-hydrated]").waitFor();
  await page.getByLabel("Files").setInputFiles([
    { name: "prices.md", mimeType: "text/markdown", buffer: Buffer.from(PRICES) },
    { name: "hours.html", mimeType: "text/html", buffer: Buffer.from(HOURS) },
    { name: "scan.jpg", mimeType: "image/jpeg", buffer: Buffer.from([0xff, 0xd8, 0xff, 0xe0]) },
  ]);
  await page.getByRole("button", { name: "Upload" }).click();
  const uploads = page.getByTestId("upload");
  await expect(uploads).toHaveCount(3);
  await expect(uploads.filter({ hasText: "prices.md" }).getByTestId("upload-outcome")).toContainText("prices.md was uploaded");
  await expect(uploads.filter({ hasText: "scan.jpg" }).getByTestId("upload-outcome")).toContainText("is a .jpg file");
  await expect(uploads.filter({ hasText: "prices.md" }).getByRole("progressbar")).toHaveAttribute("value", "1");

  // Each document's status updates live until it is ready.
  const prices = page.getByTestId("document").filter({ hasText: "prices.md" });
  await expect(prices.getByTestId("document-status")).toHaveText("Ready");
  await expect(page.getByTestId("document").filter({ hasText: "hours.html" }).getByTestId("document-status")).toHaveText("Ready");
  await expect(prices.getByTestId("document-chunks")).not.toHaveText("0");
  await expect(page.getByTestId("storage")).toContainText("of the Starter plan's 500 MB");
  await nav.getByRole("link", { name: "Billing" }).click();
  await expect(page.getByTestId("billing-storage")).toContainText("of the Starter plan's 500 MB");

  // The agent answers from all documents by default.
  await nav.getByRole("link", { name: "Agents" }).click();
  const form = page.getByRole("region", { name: "New agent" });
  await form.getByLabel("Name").fill("Front Desk");
  await form.getByLabel("Model").fill("gpt-4o-mini");
  await form.getByRole("button", { name: "Create agent" }).click();
  await expect(page.getByTestId("agent-row").filter({ hasText: "Front Desk" })).toContainText("answers from all documents");

  const { context: staffContext, staff } = await inviteStaff(page, browser, clinic, "knowledge-nurse");

  await staff.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Chat" }).click();
  await staff.getByLabel("Agent").selectOption({ label: "Front Desk" });
  await staff.getByLabel("Message").fill("How much does a flu shot cost?");
  await staff.getByRole("button", { name: "Start" }).click();
  const reply = staff.getByTestId("message-assistant").first();
  await expect(reply).toContainText("Simulated reply");
  const source = reply.getByTestId("source").first();
  await expect(source).toContainText("[1] prices.md");
  await source.getByText("[1] prices.md").click();
  await expect(source.locator("blockquote")).toContainText("A flu shot costs 25 euros.");

  // After a reload the citation is still there.
  await staff.reload();
  await expect(staff.getByTestId("message-assistant").first().getByTestId("source").first()).toContainText("prices.md");
  await staffContext.close();
});

test("the upload form works before the page is interactive", async ({ browser }) => {
  const email = uniqueEmail("knowledge-nojs");
  const setup = await browser.newContext();
  const page = await setup.newPage();
  await signUp(page, `No Script Clinic ${Date.now()}`, "Ada Admin", email);
  await expect(page.getByTestId("clinic-name")).toBeVisible();
  await setup.close();

  const context = await browser.newContext({ javaScriptEnabled: false });
  const plain = await context.newPage();
  await plain.goto("/signin");
  await plain.getByLabel("Email").fill(email);
  await plain.getByLabel("Password").fill(PASSWORD);
  await plain.getByRole("button", { name: "Sign in" }).click();
  await plain.goto("/knowledge");
  await plain.getByLabel("Files").setInputFiles([
    { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("Dr. Weber does home visits on Thursdays.") },
  ]);
  await plain.getByRole("button", { name: "Upload" }).click();
  await expect(plain).toHaveURL(/\/knowledge\?notice=/);
  await expect(plain.getByTestId("upload-notice")).toContainText("notes.txt was uploaded");
  await expect(plain.getByTestId("document").filter({ hasText: "notes.txt" })).toBeVisible();
  await context.close();
});
