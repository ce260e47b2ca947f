// Package browsertest starts Debian's chromium under chromedp for the
// console's browser tests (backend/uitest with a synthetic agent,
// tests/e2e with the real sensor) and holds the checks both make.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/harrier-sec/harrier/internal/testenv"
)

// ScreenshotsEnv names a directory (the repository's docs/) the tests
// save their screenshots into; unset, they save none.
const ScreenshotsEnv = "HARRIER_UI_SCREENSHOTS"

// Browser is one chromium with one tab.
type Browser struct {
	Ctx context.Context
	// Dialogs counts JavaScript dialogs opened (and dismissed): alert
	// data that ran as script would open one.
	Dialogs *atomic.Int32
}

// Start runs chromium (or ends t, see testenv.Missing) for at most
// timeout; it is closed at t's cleanup.
func Start(t *testing.T, timeout time.Duration) *Browser {
	t.Helper()
	var chromium string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			chromium = p
			break
		}
	}
	if chromium == "" {
		testenv.Missing(t, "no chromium on PATH: install it (`make deps` does, Debian's package chromium)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]), chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 1000), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(bctx); err != nil { // starts the browser and its tab
		t.Fatalf("start chromium: %v", err)
	}
	b := &Browser{Ctx: bctx, Dialogs: &atomic.Int32{}}
	go func() {
		for _, err := range chromedp.Events(bctx, page.JavascriptDialogOpening) {
			if err != nil {
				return
			}
			b.Dialogs.Add(1)
			_, _ = chromedp.Call(bctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	return b
}

// Do runs steps, failing t with what on error.
func (b *Browser) Do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.Ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Text is the visible text of the first element sel selects.
func (b *Browser) Text(t *testing.T, sel string) string {
	t.Helper()
	s, err := chromedp.Run(b.Ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// Eval evaluates js in the page and returns its string result.
func (b *Browser) Eval(t *testing.T, js string) string {
	t.Helper()
	s, err := chromedp.Run(b.Ctx, chromedp.Evaluate[string](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return s
}

// SignIn signs out of the console at base, signs in as user with
// password through the sign-in form, and waits for the page it lands on.
func (b *Browser) SignIn(t *testing.T, base, user, password string) {
	t.Helper()
	b.Do(t, "sign in as "+user, chromedp.Navigate(base+"/logout"), chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), user), chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.ID("signin")), chromedp.WaitNotPresent(chromedp.ID("signin")), chromedp.WaitVisible(chromedp.CSS("main h1")))
}

// Screenshot saves the whole page as docs' name when ScreenshotsEnv is
// set.
func (b *Browser) Screenshot(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv(ScreenshotsEnv)
	if dir == "" {
		return
	}
	png, err := chromedp.Run(b.Ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// unlabelledJS lists the form controls of the page a screen reader could
// not name: no <label>, aria-label or aria-labelledby (hidden inputs and
// buttons with text are named).
const unlabelledJS = `Array.from(document.querySelectorAll("input, select, textarea")).filter(e => {
	if (e.type === "hidden") return false;
	if (e.labels && e.labels.length > 0 && Array.from(e.labels).some(l => l.textContent.trim() !== "")) return false;
	if ((e.getAttribute("aria-label") || "").trim() !== "") return false;
	const by = e.getAttribute("aria-labelledby");
	if (by && by.split(/\s+/).some(id => (document.getElementById(id)?.textContent || "").trim() !== "")) return false;
	return true;
}).map(e => e.outerHTML.slice(0, 120))`

// Unlabelled returns the page's form controls without an accessible name.
func (b *Browser) Unlabelled(t *testing.T) []string {
	t.Helper()
	out, err := chromedp.Run(b.Ctx, chromedp.Evaluate[[]string](unlabelledJS))
	if err != nil {
		t.Fatalf("look for unlabelled controls: %v", err)
	}
	return out
}
