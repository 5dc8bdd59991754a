import { expect, test } from "@playwright/test";

import { simURL } from "../env";
import { expectSignedInTo, open, serverCommand, signUp, uniqueEmail } from "./fixtures/pages";

test("an admin upgrades through Stripe Checkout; the new plan and agent limit show at once", async ({ page, request }) => {
  // The operator's one-off set-up of the Stripe catalogue (safe to run again).
  const synced = serverCommand("stripe-sync");
  expect(synced).toContain("tessera_professional_base");

  await signUp(page, "Upgrade Clinic", "Olivia Owner", uniqueEmail("upgrade-owner"));
  await expectSignedInTo(page, "Upgrade Clinic");
  await open(page, "/agents");
  await expect(page.getByText("0 of 3 agents on the Starter plan.")).toBeVisible();

  await open(page, "/settings/billing");
  await expect(page.getByTestId("billing-plan")).toHaveText("Starter");
  await expect(page.getByTestId("billing-status")).toHaveText("No subscription");
  await page.getByTestId("choose-professional").click();

  // Stripe's hosted Checkout (simulated): paying sends the signed webhooks, then returns.
  await expect(page.getByRole("heading", { name: "Stripe Checkout (simulated)" })).toBeVisible();
  await expect(page.getByText("Professional monthly: $199.00 per month")).toBeVisible();
  await page.getByRole("button", { name: "Subscribe" }).click();
  await expect(page).toHaveURL(/\/settings\/billing\?checkout=success$/);
  await expect(page.getByTestId("checkout-success")).toBeVisible();
  await expect(page.getByTestId("billing-plan")).toHaveText("Professional");
  await expect(page.getByTestId("billing-status")).toHaveText("Active");
  await expect(page.getByTestId("billing-agents")).toHaveText("0 of 15 agents");
  await expect(page.getByTestId("plan-professional")).toContainText("Current plan");

  await open(page, "/agents");
  await expect(page.getByText("0 of 15 agents on the Professional plan.")).toBeVisible();

  // Manage billing opens the Customer Portal, which comes back to the Billing page.
  await open(page, "/settings/billing");
  await page.getByTestId("manage-billing").click();
  await expect(page.getByRole("heading", { name: "Billing portal (simulated)" })).toBeVisible();
  await page.getByRole("link", { name: "Return to Tessera" }).click();
  await expect(page.getByTestId("billing-plan")).toHaveText("Professional");

  // Another plan moves the running subscription (no second Checkout); back on Starter.
  await page.getByTestId("choose-starter").click();
  await expect(page.getByTestId("plan-changed")).toBeVisible();
  await expect(page.getByTestId("billing-plan")).toHaveText("Starter");
  await expect(page.getByTestId("billing-agents")).toHaveText("0 of 3 agents");

  // The renewal fails: every page warns, with the date model calls stop.
  const state = await (await request.get(`${simURL}/stripe/sim/state`)).json();
  const subscription = state.subscriptions.find((s: { status: string }) => s.status === "active");
  const failed = await request.post(`${simURL}/stripe/sim/subscriptions/${subscription.id}/payment_failed`);
  expect(failed.status()).toBe(204);
  await open(page, "/chat");
  await expect(page.getByTestId("payment-banner")).toContainText("A payment failed on");
  await expect(page.getByTestId("payment-banner")).toContainText("Manage billing");
  await open(page, "/settings/billing");
  await expect(page.getByTestId("billing-status")).toHaveText("Payment overdue");
});
