// Package uitest drives the backend's web console in a real browser
// (Debian's chromium, through chromedp): sign-in, triage, roles and that
// nothing from alert data runs as script. It has tests only.
package uitest
