package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The web client's test drives Debian's headless Chromium with chromedp:
// a Go test beside the others, against the same real stack, with no Node
// toolchain; scripts/install-chromium.sh (make tools) installs the browser.

// chromium is the browser binary: $TURNSTILE_CHROMIUM or Debian's.
func chromium(t *testing.T) string {
	bin := os.Getenv("TURNSTILE_CHROMIUM")
	if bin == "" {
		bin = "/usr/bin/chromium"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no Chromium at %s: run ./scripts/install-chromium.sh (make tools does) or set TURNSTILE_CHROMIUM", bin)
	}
	return bin
}

// browser is a fresh headless Chromium tab.
func browser(t *testing.T) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 1000),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	ctx, cancelC := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelC(); cancelB(); cancelA() })
	return ctx
}

// waitFor polls the page until the JavaScript expression cond is true.
func waitFor(t *testing.T, ctx context.Context, what, cond string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(20*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("main").innerText`))
		t.Fatalf("%s: %v\npage:\n%s", what, err, page)
	}
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func TestBrowser_UserRegistersSubmitsWatchesTheQueueLiveAndCancels(t *testing.T) {
	ctx := browser(t)
	email := fmt.Sprintf("browser%d@example.com", time.Now().UnixNano())
	if err := chromedp.Do(ctx,
		chromedp.Navigate(shared.base+"/"),
		chromedp.WaitVisible(chromedp.ID("#email")),
		chromedp.SendKeys(chromedp.ID("#email"), email),
		chromedp.SendKeys(chromedp.ID("#password"), "s3cret-passw0rd"),
		chromedp.Click(chromedp.ID("#register")),
		chromedp.WaitVisible(chromedp.ID("#app")),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the server's types in the picker", `[...document.querySelectorAll("#type option")].some(o => o.value === "sleep")`)
	// A marker that a reload would lose: everything below happens live.
	eval[any](t, ctx, `window.__noReload = 1`)

	// The server's validation error shows at the payload field.
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("#payload"), `{"ms": "soon"}`),
		chromedp.Click(chromedp.ID("#submit")),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "a validation error at the field", `document.querySelector("#payload-error").textContent !== "" && document.querySelector("#payload").getAttribute("aria-invalid") === "true"`)

	for i := range 3 {
		if err := chromedp.Do(ctx,
			chromedp.SetValue(chromedp.ID("#payload"), `{"ms": 1500}`),
			chromedp.Click(chromedp.ID("#submit")),
		); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, fmt.Sprintf("request %d on the page", i+1),
			fmt.Sprintf(`document.querySelectorAll("#running .req-line, #waiting li, #history tbody tr").length >= %d`, i+1))
	}
	// One runs, two wait with positions 1 and 2 and an estimate.
	waitFor(t, ctx, "one running and two waiting", `document.querySelectorAll("#running .req-line").length === 1 && document.querySelectorAll("#waiting li").length === 2`)
	waitFor(t, ctx, "positions and ETAs", `[...document.querySelectorAll("#waiting li")].map(li => li.querySelector(".position").textContent).join() === "#1,#2" && [...document.querySelectorAll("#waiting .eta")].every(e => e.textContent.startsWith("starts"))`)
	waitFor(t, ctx, "elapsed time and attempt", `/running \d+ s/.test(document.querySelector("#running").textContent) && /attempt 1/.test(document.querySelector("#running").textContent)`)
	waiting := eval[[]string](t, ctx, `[...document.querySelectorAll("#waiting li")].map(li => li.id.replace("waiting-", ""))`)
	next, last := waiting[0], waiting[1]

	shot := filepath.Join(t.TempDir(), "web-client.png")
	if os.Getenv("TURNSTILE_UPDATE_SCREENSHOT") != "" {
		shot = filepath.Join("..", "docs", "img", "web-client.png")
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}

	// Cancel the last by keyboard: focus its button, press Enter.
	if err := chromedp.Do(ctx,
		chromedp.Focus(chromedp.CSS(`#waiting-`+last+` button`)),
		chromedp.KeyEvent("\r"),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the cancelled one in the history", `document.querySelector("#done-`+last+` .status")?.textContent === "cancelled"`)
	// The next one moves up and runs, without a reload.
	waitFor(t, ctx, "the next one running", `document.querySelector("#running-`+next+`") !== null`)
	waitFor(t, ctx, "all finished", `document.querySelectorAll("#history .status-succeeded").length === 2 && document.querySelectorAll("#waiting li").length === 0 && document.querySelectorAll("#running .req-line").length === 0`)
	results := eval[string](t, ctx, `[...document.querySelectorAll("#history .outcome")].map(e => e.textContent).join("|")`)
	if strings.Count(results, `{"slept_ms":1500}`) != 2 {
		t.Errorf("results on the page: %s", results)
	}
	if eval[int](t, ctx, `window.__noReload || 0`) != 1 {
		t.Error("the page reloaded")
	}
	// The cancelled one can be requeued from the page, and then runs.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#done-`+last+` .actions button`))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the requeued one succeeded", `document.querySelector("#done-`+last+` .status")?.textContent === "succeeded"`)

	// Signing out ends the access at once and shows the sign-in form.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("#sign-out"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the sign-in form", `!document.querySelector("#auth").hidden && document.querySelector("#app").hidden`)
}
