# ftpbatch on a volume: docker run -v ftpbatch:/data -p 2121:2121 -p 60000-60049:60000-60049 ftpbatch
FROM python:3.11-slim
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY ftpbatch ./ftpbatch
RUN pip install --no-cache-dir . && useradd --system --home /data ftpbatch && mkdir /data && chown ftpbatch /data
USER ftpbatch
ENV FTPBATCH_ROOT=/data
VOLUME /data
EXPOSE 2121 60000-60049
# Announce the host's public address with -e FTPBATCH_FTP_MASQUERADE_ADDRESS=... behind NAT.
CMD ["sh", "-c", "ftpbatch init && exec ftpbatch serve --ftp-host 0.0.0.0 --passive-ports 60000-60049"]
