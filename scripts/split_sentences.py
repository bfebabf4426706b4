"""Rule split_sentences: corpus -> filtered sentences dealt into the sampling parts."""

from sarm.backbone import load_tokenizer
from sarm.data.corpus import iter_sentences, write_sentence_parts
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
corpus = snakemake.params.corpus
sentences = iter_sentences(
    corpus["source"],
    text_column=corpus["text_column"],
    split=corpus["split"],
    splitter=corpus["splitter"],
    tokenizer=load_tokenizer(snakemake.params.backbone),
    min_tokens=corpus["min_tokens"],
    max_tokens=corpus["max_tokens"],
    min_counts_special_tokens=corpus["min_counts_special_tokens"],
    limit=corpus["sentences"],
)
counts = write_sentence_parts(sentences, list(snakemake.output.parts))
log.info("sentences per part: %s", counts)
if sum(counts) < corpus["sentences"]:
    log.warning(
        "the corpus gave %d sentences, fewer than data.corpus.sentences = %d",
        sum(counts),
        corpus["sentences"],
    )
