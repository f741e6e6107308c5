"""Dataset sources for ``dermbench prepare``: one module per published dataset, one line here."""

from ...registry import Registry

SOURCES = Registry("dataset source")

_P = "dermbench.data.sources"
SOURCES.add("ham10000", f"{_P}.ham10000:HAM10000", "HAM10000 dermoscopic images, split grouped by lesion",
            licence="CC BY-NC 4.0", url="https://doi.org/10.7910/DVN/DBW86T")
SOURCES.add("isic2018", f"{_P}.isic2018:ISIC2018", "ISIC 2018 task 3, official train/validation/test split",
            licence="CC BY-NC 4.0", url="https://challenge.isic-archive.com/data/#2018")
SOURCES.add("isic2024", f"{_P}.isic2024:ISIC2024", "ISIC 2024 SLICE-3D TBP crops (folder or train-image.hdf5)",
            licence="CC-BY / CC-BY-NC / CC-0 per image", url="https://challenge2024.isic-archive.com/")
SOURCES.add("pad-ufes-20", f"{_P}.pad_ufes_20:PADUFES20", "PAD-UFES-20 smartphone images, split grouped by patient",
            licence="CC BY 4.0", url="https://doi.org/10.17632/zr7vgbcyr2.1")
SOURCES.add("ddi", f"{_P}.ddi:DDI", "Diverse Dermatology Images, stratified by label x skin tone",
            licence="Stanford DDI research use agreement", url="https://ddi-dataset.github.io/")
SOURCES.add("sd-198", f"{_P}.sd198:SD198", "SD-198 clinical images (class folders or release txt files)",
            licence="research use", url="https://link.springer.com/chapter/10.1007/978-3-319-46466-4_13")
SOURCES.add("fitzpatrick17k", f"{_P}.fitzpatrick17k:Fitzpatrick17k", "Fitzpatrick17k (neoplastic rows), by label x FST",
            licence="CC BY-NC-SA 3.0", url="https://github.com/mattgroh/fitzpatrick17k")
SOURCES.add("dermamnist", f"{_P}.dermamnist:DermaMNIST", "DermaMNIST .npz (28/64/128/224 px), official split",
            licence="CC BY-NC 4.0", url="https://medmnist.com/")
SOURCES.add("isic-archive", f"{_P}.isic_archive:ISICArchive", "ISIC Archive download (isic-cli: metadata.csv + images)",
            licence="CC-0 / CC-BY / CC-BY-NC per image", url="https://www.isic-archive.com/")
SOURCES.add("csv", f"{_P}.csv_source:CSVSource", "any CSV + image folder + YAML diagnosis mapping table",
            licence="as declared", url="")
