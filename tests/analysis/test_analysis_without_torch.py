import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def test_analysis_never_imports_torch():
    code = (
        "import sys\n"
        "import peftlab.analysis, peftlab.analysis.intervals, peftlab.analysis.comparisons, peftlab.analysis.tables, "
        "peftlab.analysis.figures, peftlab.analysis.aggregates, peftlab.analysis.bootstrap\n"
        "import peftlab.analysis.report, peftlab.analysis.load\n"
        "import peftlab.analysis.health, peftlab.analysis.report\n"
        "import peftlab.monitors.convergence, peftlab.monitors.health\n"
        "import peftlab.analysis.paper, peftlab.analysis.literature, peftlab.analysis.submission\n"
        "import peftlab.analysis.paper_figures, peftlab.analysis.paper_tables\n"
        "import peftlab.analysis.power, peftlab.analysis.significance, peftlab.analysis.equal_bits\n"
        "import peftlab.analysis.vtab_scores\n"
        "import peftlab.analysis.tuning, peftlab.analysis.tuning_table\n"
        "import peftlab.analysis.ablation_figure, peftlab.analysis.health_figures\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=480)
    assert result.returncode == 0, result.stderr
