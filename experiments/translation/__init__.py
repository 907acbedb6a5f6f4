"""Machine translation (`python -m experiments.translation`): Multi30k and CLDR dates, recurrent encoder-decoders,
sacreBLEU."""
