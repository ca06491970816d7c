"""Pages under test: each one's console errors and uncaught exceptions are
collected, and a test that did not expect any ends with none."""


def watched(page):
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return page


def assert_quiet(page) -> None:
    assert page.errors == [], f"console errors: {page.errors}"
