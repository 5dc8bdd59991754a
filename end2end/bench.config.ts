import base from "./playwright.config";

// The page-speed benchmark (bench/pages.sh): the Playwright set-up of the tests, with the
// benchmark's own directory and more time.
export default { ...base, testDir: "./bench", timeout: 600_000 };
