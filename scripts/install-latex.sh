#!/usr/bin/env bash
# Installs the Debian packages `peftlab paper` and its tests need, when they are missing
# (idempotent: a second call checks and installs nothing):
#   texlive-latex-base         pdflatex, bibtex, amsmath, graphicx, hyperref, natbib, geometry, tabularx
#   texlive-latex-recommended  booktabs, subcaption, caption, xcolor
#   texlive-science            algorithm, algpseudocode
#   latexmk                    the build driver
#   poppler-utils              pdftotext, pdftoppm (the tests read and render the PDF)
# Installs only when apt may be used (root, or passwordless sudo); otherwise names the missing
# packages in one line and exits 0 (`peftlab paper` then refuses to compile with the same list).
# Exits 1 when apt may be used and the installation fails.
set -u

missing=()
want() { for p in "$@"; do [[ " ${missing[*]-} " == *" $p "* ]] || missing+=("$p"); done; }

if ! command -v pdflatex >/dev/null 2>&1 || ! command -v bibtex >/dev/null 2>&1 \
    || ! command -v kpsewhich >/dev/null 2>&1; then
  want texlive-latex-base texlive-latex-recommended texlive-science
else
  for style in booktabs subcaption xcolor; do
    kpsewhich "$style.sty" >/dev/null 2>&1 || want texlive-latex-recommended
  done
  for style in algorithm algpseudocode; do
    kpsewhich "$style.sty" >/dev/null 2>&1 || want texlive-science
  done
fi
command -v latexmk >/dev/null 2>&1 || want latexmk
{ command -v pdftotext && command -v pdftoppm; } >/dev/null 2>&1 || want poppler-utils

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; fi
if ! command -v apt-get >/dev/null 2>&1 || { [ "$(id -u)" -ne 0 ] && [ -z "$sudo" ]; }; then
  echo "install-latex: warning: missing Debian packages ${missing[*]} (apt-get is not available or not permitted);" \
       "install them with apt-get install --no-install-recommends to compile the paper" >&2
  exit 0
fi

echo "install-latex: installing Debian packages ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { $sudo apt-get update -q >/dev/null 2>&1 \
       && $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; } \
  || { echo "install-latex: error: apt-get could not install ${missing[*]}" >&2; exit 1; }
echo "install-latex: installed ${missing[*]} in $(( $(date +%s) - start )) s"
