# The SDK harness image for Beam workers on Flink, Spark or any portable runner: Beam's official
# Python 3.11 SDK image of the pinned Beam version, with this project installed, so workers can
# run the preprocessing job's and the scoring job's code. tests/test_packaging.py checks that the
# versions here match setup.py.
#
#   docker build -t REGISTRY/copymove-beam:0.1.0 . && docker push REGISTRY/copymove-beam:0.1.0
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/copymove
COPY setup.py README.md ./
COPY preprocessing ./preprocessing
COPY trainer ./trainer
COPY serving ./serving
RUN pip install --no-cache-dir ".[pipeline]" && python -c "import preprocessing.pipeline, serving.beam_pipeline"
