import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def test_analysis_never_imports_torch():
    code = (
        "import sys\n"
        "import peftlab.analysis, peftlab.analysis.stats.intervals, peftlab.analysis.stats.comparisons\n"
        "import peftlab.analysis.report.tables, "
        "peftlab.analysis.figures.study, peftlab.analysis.stats.aggregates, peftlab.analysis.stats.bootstrap\n"
        "import peftlab.analysis.report.build, peftlab.analysis.results.load\n"
        "import peftlab.analysis.report.health, peftlab.analysis.report.build\n"
        "import peftlab.training.monitors.convergence, peftlab.training.monitors.health\n"
        "import peftlab.analysis.paper.build, peftlab.analysis.report.literature, peftlab.analysis.archive.submission\n"
        "import peftlab.analysis.paper.figures, peftlab.analysis.paper.tables\n"
        "import peftlab.analysis.stats.power, peftlab.analysis.report.significance\n"
        "import peftlab.analysis.report.equal_bits\n"
        "import peftlab.analysis.stats.vtab_scores\n"
        "import peftlab.analysis.report.tuning, peftlab.analysis.paper.tuning_table\n"
        "import peftlab.analysis.figures.ablation, peftlab.analysis.figures.health\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=480)
    assert result.returncode == 0, result.stderr
