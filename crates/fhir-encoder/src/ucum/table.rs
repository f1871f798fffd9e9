//! UCUM essence definitions: prefixes, base units and defined units.
//!
//! GENERATED FILE, do not edit: `cargo run -p fhir-encoder --example generate-ucum-table`
//! writes it from `definitions/ucum/ucum-essence.xml.gz` (UCUM essence 2.1; source and
//! licence in `definitions/ucum/NOTICE.md`).
use super::essence::{Definition, PrefixDef, UnitDef};

/// Prefixes in essence order: the parser takes the first prefix that leaves a
/// metric unit behind.
pub(super) const PREFIXES: &[PrefixDef] = &[
    PrefixDef {
        code: "Y",
        value: "1e24",
    },
    PrefixDef {
        code: "Z",
        value: "1e21",
    },
    PrefixDef {
        code: "E",
        value: "1e18",
    },
    PrefixDef {
        code: "P",
        value: "1e15",
    },
    PrefixDef {
        code: "T",
        value: "1e12",
    },
    PrefixDef {
        code: "G",
        value: "1e9",
    },
    PrefixDef {
        code: "M",
        value: "1e6",
    },
    PrefixDef {
        code: "k",
        value: "1e3",
    },
    PrefixDef {
        code: "h",
        value: "1e2",
    },
    PrefixDef {
        code: "da",
        value: "1e1",
    },
    PrefixDef {
        code: "d",
        value: "1e-1",
    },
    PrefixDef {
        code: "c",
        value: "1e-2",
    },
    PrefixDef {
        code: "m",
        value: "1e-3",
    },
    PrefixDef {
        code: "u",
        value: "1e-6",
    },
    PrefixDef {
        code: "n",
        value: "1e-9",
    },
    PrefixDef {
        code: "p",
        value: "1e-12",
    },
    PrefixDef {
        code: "f",
        value: "1e-15",
    },
    PrefixDef {
        code: "a",
        value: "1e-18",
    },
    PrefixDef {
        code: "z",
        value: "1e-21",
    },
    PrefixDef {
        code: "y",
        value: "1e-24",
    },
    PrefixDef {
        code: "Ki",
        value: "1024",
    },
    PrefixDef {
        code: "Mi",
        value: "1048576",
    },
    PrefixDef {
        code: "Gi",
        value: "1073741824",
    },
    PrefixDef {
        code: "Ti",
        value: "1099511627776",
    },
];

/// Base units; canonical forms are products of powers of these.
pub(super) const BASE_UNITS: &[&str] = &["m", "s", "g", "rad", "K", "C", "cd"];

/// Defined units, each after the units its definition uses (else in essence order).
pub(super) const UNITS: &[UnitDef] = &[
    UnitDef {
        code: "10*",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "10",
        },
    },
    UnitDef {
        code: "10^",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "10",
        },
    },
    UnitDef {
        code: "[pi]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "3.1415926535897932384626433832795028841971693993751058209749445923",
        },
    },
    UnitDef {
        code: "%",
        metric: false,
        definition: Definition::Linear {
            unit: "10*-2",
            value: "1",
        },
    },
    UnitDef {
        code: "[ppth]",
        metric: false,
        definition: Definition::Linear {
            unit: "10*-3",
            value: "1",
        },
    },
    UnitDef {
        code: "[ppm]",
        metric: false,
        definition: Definition::Linear {
            unit: "10*-6",
            value: "1",
        },
    },
    UnitDef {
        code: "[ppb]",
        metric: false,
        definition: Definition::Linear {
            unit: "10*-9",
            value: "1",
        },
    },
    UnitDef {
        code: "[pptr]",
        metric: false,
        definition: Definition::Linear {
            unit: "10*-12",
            value: "1",
        },
    },
    UnitDef {
        code: "mol",
        metric: true,
        definition: Definition::Linear {
            unit: "10*23",
            value: "6.0221367",
        },
    },
    UnitDef {
        code: "sr",
        metric: true,
        definition: Definition::Linear {
            unit: "rad2",
            value: "1",
        },
    },
    UnitDef {
        code: "Hz",
        metric: true,
        definition: Definition::Linear {
            unit: "s-1",
            value: "1",
        },
    },
    UnitDef {
        code: "N",
        metric: true,
        definition: Definition::Linear {
            unit: "kg.m/s2",
            value: "1",
        },
    },
    UnitDef {
        code: "Pa",
        metric: true,
        definition: Definition::Linear {
            unit: "N/m2",
            value: "1",
        },
    },
    UnitDef {
        code: "J",
        metric: true,
        definition: Definition::Linear {
            unit: "N.m",
            value: "1",
        },
    },
    UnitDef {
        code: "W",
        metric: true,
        definition: Definition::Linear {
            unit: "J/s",
            value: "1",
        },
    },
    UnitDef {
        code: "A",
        metric: true,
        definition: Definition::Linear {
            unit: "C/s",
            value: "1",
        },
    },
    UnitDef {
        code: "V",
        metric: true,
        definition: Definition::Linear {
            unit: "J/C",
            value: "1",
        },
    },
    UnitDef {
        code: "F",
        metric: true,
        definition: Definition::Linear {
            unit: "C/V",
            value: "1",
        },
    },
    UnitDef {
        code: "Ohm",
        metric: true,
        definition: Definition::Linear {
            unit: "V/A",
            value: "1",
        },
    },
    UnitDef {
        code: "S",
        metric: true,
        definition: Definition::Linear {
            unit: "Ohm-1",
            value: "1",
        },
    },
    UnitDef {
        code: "Wb",
        metric: true,
        definition: Definition::Linear {
            unit: "V.s",
            value: "1",
        },
    },
    UnitDef {
        code: "Cel",
        metric: true,
        definition: Definition::Special { units: Some("K") },
    },
    UnitDef {
        code: "T",
        metric: true,
        definition: Definition::Linear {
            unit: "Wb/m2",
            value: "1",
        },
    },
    UnitDef {
        code: "H",
        metric: true,
        definition: Definition::Linear {
            unit: "Wb/A",
            value: "1",
        },
    },
    UnitDef {
        code: "lm",
        metric: true,
        definition: Definition::Linear {
            unit: "cd.sr",
            value: "1",
        },
    },
    UnitDef {
        code: "lx",
        metric: true,
        definition: Definition::Linear {
            unit: "lm/m2",
            value: "1",
        },
    },
    UnitDef {
        code: "Bq",
        metric: true,
        definition: Definition::Linear {
            unit: "s-1",
            value: "1",
        },
    },
    UnitDef {
        code: "Gy",
        metric: true,
        definition: Definition::Linear {
            unit: "J/kg",
            value: "1",
        },
    },
    UnitDef {
        code: "Sv",
        metric: true,
        definition: Definition::Linear {
            unit: "J/kg",
            value: "1",
        },
    },
    UnitDef {
        code: "deg",
        metric: false,
        definition: Definition::Linear {
            unit: "[pi].rad/360",
            value: "2",
        },
    },
    UnitDef {
        code: "gon",
        metric: false,
        definition: Definition::Linear {
            unit: "deg",
            value: "0.9",
        },
    },
    UnitDef {
        code: "'",
        metric: false,
        definition: Definition::Linear {
            unit: "deg/60",
            value: "1",
        },
    },
    UnitDef {
        code: "''",
        metric: false,
        definition: Definition::Linear {
            unit: "'/60",
            value: "1",
        },
    },
    UnitDef {
        code: "l",
        metric: true,
        definition: Definition::Linear {
            unit: "dm3",
            value: "1",
        },
    },
    UnitDef {
        code: "L",
        metric: true,
        definition: Definition::Linear {
            unit: "l",
            value: "1",
        },
    },
    UnitDef {
        code: "ar",
        metric: true,
        definition: Definition::Linear {
            unit: "m2",
            value: "100",
        },
    },
    UnitDef {
        code: "min",
        metric: false,
        definition: Definition::Linear {
            unit: "s",
            value: "60",
        },
    },
    UnitDef {
        code: "h",
        metric: false,
        definition: Definition::Linear {
            unit: "min",
            value: "60",
        },
    },
    UnitDef {
        code: "d",
        metric: false,
        definition: Definition::Linear {
            unit: "h",
            value: "24",
        },
    },
    UnitDef {
        code: "a_t",
        metric: false,
        definition: Definition::Linear {
            unit: "d",
            value: "365.24219",
        },
    },
    UnitDef {
        code: "a_j",
        metric: false,
        definition: Definition::Linear {
            unit: "d",
            value: "365.25",
        },
    },
    UnitDef {
        code: "a_g",
        metric: false,
        definition: Definition::Linear {
            unit: "d",
            value: "365.2425",
        },
    },
    UnitDef {
        code: "a",
        metric: false,
        definition: Definition::Linear {
            unit: "a_j",
            value: "1",
        },
    },
    UnitDef {
        code: "wk",
        metric: false,
        definition: Definition::Linear {
            unit: "d",
            value: "7",
        },
    },
    UnitDef {
        code: "mo_s",
        metric: false,
        definition: Definition::Linear {
            unit: "d",
            value: "29.53059",
        },
    },
    UnitDef {
        code: "mo_j",
        metric: false,
        definition: Definition::Linear {
            unit: "a_j/12",
            value: "1",
        },
    },
    UnitDef {
        code: "mo_g",
        metric: false,
        definition: Definition::Linear {
            unit: "a_g/12",
            value: "1",
        },
    },
    UnitDef {
        code: "mo",
        metric: false,
        definition: Definition::Linear {
            unit: "mo_j",
            value: "1",
        },
    },
    UnitDef {
        code: "t",
        metric: true,
        definition: Definition::Linear {
            unit: "kg",
            value: "1e3",
        },
    },
    UnitDef {
        code: "bar",
        metric: true,
        definition: Definition::Linear {
            unit: "Pa",
            value: "1e5",
        },
    },
    UnitDef {
        code: "u",
        metric: true,
        definition: Definition::Linear {
            unit: "g",
            value: "1.6605402e-24",
        },
    },
    UnitDef {
        code: "AU",
        metric: false,
        definition: Definition::Linear {
            unit: "Mm",
            value: "149597.870691",
        },
    },
    UnitDef {
        code: "pc",
        metric: true,
        definition: Definition::Linear {
            unit: "m",
            value: "3.085678e16",
        },
    },
    UnitDef {
        code: "[c]",
        metric: true,
        definition: Definition::Linear {
            unit: "m/s",
            value: "299792458",
        },
    },
    UnitDef {
        code: "[h]",
        metric: true,
        definition: Definition::Linear {
            unit: "J.s",
            value: "6.6260755e-34",
        },
    },
    UnitDef {
        code: "[k]",
        metric: true,
        definition: Definition::Linear {
            unit: "J/K",
            value: "1.380658e-23",
        },
    },
    UnitDef {
        code: "[eps_0]",
        metric: true,
        definition: Definition::Linear {
            unit: "F/m",
            value: "8.854187817e-12",
        },
    },
    UnitDef {
        code: "[mu_0]",
        metric: true,
        definition: Definition::Linear {
            unit: "4.[pi].10*-7.N/A2",
            value: "1",
        },
    },
    UnitDef {
        code: "[e]",
        metric: true,
        definition: Definition::Linear {
            unit: "C",
            value: "1.60217733e-19",
        },
    },
    UnitDef {
        code: "eV",
        metric: true,
        definition: Definition::Linear {
            unit: "[e].V",
            value: "1",
        },
    },
    UnitDef {
        code: "[m_e]",
        metric: true,
        definition: Definition::Linear {
            unit: "g",
            value: "9.1093897e-28",
        },
    },
    UnitDef {
        code: "[m_p]",
        metric: true,
        definition: Definition::Linear {
            unit: "g",
            value: "1.6726231e-24",
        },
    },
    UnitDef {
        code: "[G]",
        metric: true,
        definition: Definition::Linear {
            unit: "m3.kg-1.s-2",
            value: "6.67259e-11",
        },
    },
    UnitDef {
        code: "[g]",
        metric: true,
        definition: Definition::Linear {
            unit: "m/s2",
            value: "980665e-5",
        },
    },
    UnitDef {
        code: "Torr",
        metric: false,
        definition: Definition::Linear {
            unit: "Pa",
            value: "133.322",
        },
    },
    UnitDef {
        code: "atm",
        metric: false,
        definition: Definition::Linear {
            unit: "Pa",
            value: "101325",
        },
    },
    UnitDef {
        code: "[ly]",
        metric: true,
        definition: Definition::Linear {
            unit: "[c].a_j",
            value: "1",
        },
    },
    UnitDef {
        code: "gf",
        metric: true,
        definition: Definition::Linear {
            unit: "g.[g]",
            value: "1",
        },
    },
    UnitDef {
        code: "Ky",
        metric: true,
        definition: Definition::Linear {
            unit: "cm-1",
            value: "1",
        },
    },
    UnitDef {
        code: "Gal",
        metric: true,
        definition: Definition::Linear {
            unit: "cm/s2",
            value: "1",
        },
    },
    UnitDef {
        code: "dyn",
        metric: true,
        definition: Definition::Linear {
            unit: "g.cm/s2",
            value: "1",
        },
    },
    UnitDef {
        code: "erg",
        metric: true,
        definition: Definition::Linear {
            unit: "dyn.cm",
            value: "1",
        },
    },
    UnitDef {
        code: "P",
        metric: true,
        definition: Definition::Linear {
            unit: "dyn.s/cm2",
            value: "1",
        },
    },
    UnitDef {
        code: "Bi",
        metric: true,
        definition: Definition::Linear {
            unit: "A",
            value: "10",
        },
    },
    UnitDef {
        code: "St",
        metric: true,
        definition: Definition::Linear {
            unit: "cm2/s",
            value: "1",
        },
    },
    UnitDef {
        code: "Mx",
        metric: true,
        definition: Definition::Linear {
            unit: "Wb",
            value: "1e-8",
        },
    },
    UnitDef {
        code: "G",
        metric: true,
        definition: Definition::Linear {
            unit: "T",
            value: "1e-4",
        },
    },
    UnitDef {
        code: "Oe",
        metric: true,
        definition: Definition::Linear {
            unit: "/[pi].A/m",
            value: "250",
        },
    },
    UnitDef {
        code: "Gb",
        metric: true,
        definition: Definition::Linear {
            unit: "Oe.cm",
            value: "1",
        },
    },
    UnitDef {
        code: "sb",
        metric: true,
        definition: Definition::Linear {
            unit: "cd/cm2",
            value: "1",
        },
    },
    UnitDef {
        code: "Lmb",
        metric: true,
        definition: Definition::Linear {
            unit: "cd/cm2/[pi]",
            value: "1",
        },
    },
    UnitDef {
        code: "ph",
        metric: true,
        definition: Definition::Linear {
            unit: "lx",
            value: "1e-4",
        },
    },
    UnitDef {
        code: "Ci",
        metric: true,
        definition: Definition::Linear {
            unit: "Bq",
            value: "37e9",
        },
    },
    UnitDef {
        code: "R",
        metric: true,
        definition: Definition::Linear {
            unit: "C/kg",
            value: "2.58e-4",
        },
    },
    UnitDef {
        code: "RAD",
        metric: true,
        definition: Definition::Linear {
            unit: "erg/g",
            value: "100",
        },
    },
    UnitDef {
        code: "REM",
        metric: true,
        definition: Definition::Linear {
            unit: "RAD",
            value: "1",
        },
    },
    UnitDef {
        code: "[in_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "cm",
            value: "254e-2",
        },
    },
    UnitDef {
        code: "[ft_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[in_i]",
            value: "12",
        },
    },
    UnitDef {
        code: "[yd_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_i]",
            value: "3",
        },
    },
    UnitDef {
        code: "[mi_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_i]",
            value: "5280",
        },
    },
    UnitDef {
        code: "[fth_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_i]",
            value: "6",
        },
    },
    UnitDef {
        code: "[nmi_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "m",
            value: "1852",
        },
    },
    UnitDef {
        code: "[kn_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[nmi_i]/h",
            value: "1",
        },
    },
    UnitDef {
        code: "[sin_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[in_i]2",
            value: "1",
        },
    },
    UnitDef {
        code: "[sft_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_i]2",
            value: "1",
        },
    },
    UnitDef {
        code: "[syd_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[yd_i]2",
            value: "1",
        },
    },
    UnitDef {
        code: "[cin_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[in_i]3",
            value: "1",
        },
    },
    UnitDef {
        code: "[cft_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_i]3",
            value: "1",
        },
    },
    UnitDef {
        code: "[cyd_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[yd_i]3",
            value: "1",
        },
    },
    UnitDef {
        code: "[bf_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[in_i]3",
            value: "144",
        },
    },
    UnitDef {
        code: "[cr_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_i]3",
            value: "128",
        },
    },
    UnitDef {
        code: "[mil_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[in_i]",
            value: "1e-3",
        },
    },
    UnitDef {
        code: "[cml_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[pi]/4.[mil_i]2",
            value: "1",
        },
    },
    UnitDef {
        code: "[hd_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "[in_i]",
            value: "4",
        },
    },
    UnitDef {
        code: "[ft_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "m/3937",
            value: "1200",
        },
    },
    UnitDef {
        code: "[yd_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_us]",
            value: "3",
        },
    },
    UnitDef {
        code: "[in_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_us]/12",
            value: "1",
        },
    },
    UnitDef {
        code: "[rd_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_us]",
            value: "16.5",
        },
    },
    UnitDef {
        code: "[ch_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[rd_us]",
            value: "4",
        },
    },
    UnitDef {
        code: "[lk_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ch_us]/100",
            value: "1",
        },
    },
    UnitDef {
        code: "[rch_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_us]",
            value: "100",
        },
    },
    UnitDef {
        code: "[rlk_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[rch_us]/100",
            value: "1",
        },
    },
    UnitDef {
        code: "[fth_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_us]",
            value: "6",
        },
    },
    UnitDef {
        code: "[fur_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[rd_us]",
            value: "40",
        },
    },
    UnitDef {
        code: "[mi_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[fur_us]",
            value: "8",
        },
    },
    UnitDef {
        code: "[acr_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[rd_us]2",
            value: "160",
        },
    },
    UnitDef {
        code: "[srd_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[rd_us]2",
            value: "1",
        },
    },
    UnitDef {
        code: "[smi_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[mi_us]2",
            value: "1",
        },
    },
    UnitDef {
        code: "[sct]",
        metric: false,
        definition: Definition::Linear {
            unit: "[mi_us]2",
            value: "1",
        },
    },
    UnitDef {
        code: "[twp]",
        metric: false,
        definition: Definition::Linear {
            unit: "[sct]",
            value: "36",
        },
    },
    UnitDef {
        code: "[mil_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[in_us]",
            value: "1e-3",
        },
    },
    UnitDef {
        code: "[in_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "cm",
            value: "2.539998",
        },
    },
    UnitDef {
        code: "[ft_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[in_br]",
            value: "12",
        },
    },
    UnitDef {
        code: "[rd_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_br]",
            value: "16.5",
        },
    },
    UnitDef {
        code: "[ch_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[rd_br]",
            value: "4",
        },
    },
    UnitDef {
        code: "[lk_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ch_br]/100",
            value: "1",
        },
    },
    UnitDef {
        code: "[fth_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_br]",
            value: "6",
        },
    },
    UnitDef {
        code: "[pc_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_br]",
            value: "2.5",
        },
    },
    UnitDef {
        code: "[yd_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_br]",
            value: "3",
        },
    },
    UnitDef {
        code: "[mi_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_br]",
            value: "5280",
        },
    },
    UnitDef {
        code: "[nmi_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_br]",
            value: "6080",
        },
    },
    UnitDef {
        code: "[kn_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[nmi_br]/h",
            value: "1",
        },
    },
    UnitDef {
        code: "[acr_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[yd_br]2",
            value: "4840",
        },
    },
    UnitDef {
        code: "[gal_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[in_i]3",
            value: "231",
        },
    },
    UnitDef {
        code: "[bbl_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[gal_us]",
            value: "42",
        },
    },
    UnitDef {
        code: "[qt_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[gal_us]/4",
            value: "1",
        },
    },
    UnitDef {
        code: "[pt_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[qt_us]/2",
            value: "1",
        },
    },
    UnitDef {
        code: "[gil_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[pt_us]/4",
            value: "1",
        },
    },
    UnitDef {
        code: "[foz_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[gil_us]/4",
            value: "1",
        },
    },
    UnitDef {
        code: "[fdr_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[foz_us]/8",
            value: "1",
        },
    },
    UnitDef {
        code: "[min_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[fdr_us]/60",
            value: "1",
        },
    },
    UnitDef {
        code: "[crd_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_i]3",
            value: "128",
        },
    },
    UnitDef {
        code: "[bu_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[in_i]3",
            value: "2150.42",
        },
    },
    UnitDef {
        code: "[gal_wi]",
        metric: false,
        definition: Definition::Linear {
            unit: "[bu_us]/8",
            value: "1",
        },
    },
    UnitDef {
        code: "[pk_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[bu_us]/4",
            value: "1",
        },
    },
    UnitDef {
        code: "[dqt_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[pk_us]/8",
            value: "1",
        },
    },
    UnitDef {
        code: "[dpt_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[dqt_us]/2",
            value: "1",
        },
    },
    UnitDef {
        code: "[tbs_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[foz_us]/2",
            value: "1",
        },
    },
    UnitDef {
        code: "[tsp_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[tbs_us]/3",
            value: "1",
        },
    },
    UnitDef {
        code: "[cup_us]",
        metric: false,
        definition: Definition::Linear {
            unit: "[tbs_us]",
            value: "16",
        },
    },
    UnitDef {
        code: "[foz_m]",
        metric: false,
        definition: Definition::Linear {
            unit: "mL",
            value: "30",
        },
    },
    UnitDef {
        code: "[cup_m]",
        metric: false,
        definition: Definition::Linear {
            unit: "mL",
            value: "240",
        },
    },
    UnitDef {
        code: "[tsp_m]",
        metric: false,
        definition: Definition::Linear {
            unit: "mL",
            value: "5",
        },
    },
    UnitDef {
        code: "[tbs_m]",
        metric: false,
        definition: Definition::Linear {
            unit: "mL",
            value: "15",
        },
    },
    UnitDef {
        code: "[gal_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "l",
            value: "4.54609",
        },
    },
    UnitDef {
        code: "[pk_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[gal_br]",
            value: "2",
        },
    },
    UnitDef {
        code: "[bu_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[pk_br]",
            value: "4",
        },
    },
    UnitDef {
        code: "[qt_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[gal_br]/4",
            value: "1",
        },
    },
    UnitDef {
        code: "[pt_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[qt_br]/2",
            value: "1",
        },
    },
    UnitDef {
        code: "[gil_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[pt_br]/4",
            value: "1",
        },
    },
    UnitDef {
        code: "[foz_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[gil_br]/5",
            value: "1",
        },
    },
    UnitDef {
        code: "[fdr_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[foz_br]/8",
            value: "1",
        },
    },
    UnitDef {
        code: "[min_br]",
        metric: false,
        definition: Definition::Linear {
            unit: "[fdr_br]/60",
            value: "1",
        },
    },
    UnitDef {
        code: "[gr]",
        metric: false,
        definition: Definition::Linear {
            unit: "mg",
            value: "64.79891",
        },
    },
    UnitDef {
        code: "[lb_av]",
        metric: false,
        definition: Definition::Linear {
            unit: "[gr]",
            value: "7000",
        },
    },
    UnitDef {
        code: "[lbf_av]",
        metric: false,
        definition: Definition::Linear {
            unit: "[lb_av].[g]",
            value: "1",
        },
    },
    UnitDef {
        code: "[oz_av]",
        metric: false,
        definition: Definition::Linear {
            unit: "[lb_av]/16",
            value: "1",
        },
    },
    UnitDef {
        code: "[dr_av]",
        metric: false,
        definition: Definition::Linear {
            unit: "[oz_av]/16",
            value: "1",
        },
    },
    UnitDef {
        code: "[scwt_av]",
        metric: false,
        definition: Definition::Linear {
            unit: "[lb_av]",
            value: "100",
        },
    },
    UnitDef {
        code: "[lcwt_av]",
        metric: false,
        definition: Definition::Linear {
            unit: "[lb_av]",
            value: "112",
        },
    },
    UnitDef {
        code: "[ston_av]",
        metric: false,
        definition: Definition::Linear {
            unit: "[scwt_av]",
            value: "20",
        },
    },
    UnitDef {
        code: "[lton_av]",
        metric: false,
        definition: Definition::Linear {
            unit: "[lcwt_av]",
            value: "20",
        },
    },
    UnitDef {
        code: "[stone_av]",
        metric: false,
        definition: Definition::Linear {
            unit: "[lb_av]",
            value: "14",
        },
    },
    UnitDef {
        code: "[pwt_tr]",
        metric: false,
        definition: Definition::Linear {
            unit: "[gr]",
            value: "24",
        },
    },
    UnitDef {
        code: "[oz_tr]",
        metric: false,
        definition: Definition::Linear {
            unit: "[pwt_tr]",
            value: "20",
        },
    },
    UnitDef {
        code: "[lb_tr]",
        metric: false,
        definition: Definition::Linear {
            unit: "[oz_tr]",
            value: "12",
        },
    },
    UnitDef {
        code: "[sc_ap]",
        metric: false,
        definition: Definition::Linear {
            unit: "[gr]",
            value: "20",
        },
    },
    UnitDef {
        code: "[dr_ap]",
        metric: false,
        definition: Definition::Linear {
            unit: "[sc_ap]",
            value: "3",
        },
    },
    UnitDef {
        code: "[oz_ap]",
        metric: false,
        definition: Definition::Linear {
            unit: "[dr_ap]",
            value: "8",
        },
    },
    UnitDef {
        code: "[lb_ap]",
        metric: false,
        definition: Definition::Linear {
            unit: "[oz_ap]",
            value: "12",
        },
    },
    UnitDef {
        code: "[oz_m]",
        metric: false,
        definition: Definition::Linear {
            unit: "g",
            value: "28",
        },
    },
    UnitDef {
        code: "[lne]",
        metric: false,
        definition: Definition::Linear {
            unit: "[in_i]/12",
            value: "1",
        },
    },
    UnitDef {
        code: "[pnt]",
        metric: false,
        definition: Definition::Linear {
            unit: "[lne]/6",
            value: "1",
        },
    },
    UnitDef {
        code: "[pca]",
        metric: false,
        definition: Definition::Linear {
            unit: "[pnt]",
            value: "12",
        },
    },
    UnitDef {
        code: "[pnt_pr]",
        metric: false,
        definition: Definition::Linear {
            unit: "[in_i]",
            value: "0.013837",
        },
    },
    UnitDef {
        code: "[pca_pr]",
        metric: false,
        definition: Definition::Linear {
            unit: "[pnt_pr]",
            value: "12",
        },
    },
    UnitDef {
        code: "[pied]",
        metric: false,
        definition: Definition::Linear {
            unit: "cm",
            value: "32.48",
        },
    },
    UnitDef {
        code: "[pouce]",
        metric: false,
        definition: Definition::Linear {
            unit: "[pied]/12",
            value: "1",
        },
    },
    UnitDef {
        code: "[ligne]",
        metric: false,
        definition: Definition::Linear {
            unit: "[pouce]/12",
            value: "1",
        },
    },
    UnitDef {
        code: "[didot]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ligne]/6",
            value: "1",
        },
    },
    UnitDef {
        code: "[cicero]",
        metric: false,
        definition: Definition::Linear {
            unit: "[didot]",
            value: "12",
        },
    },
    UnitDef {
        code: "[degF]",
        metric: false,
        definition: Definition::Special { units: Some("K") },
    },
    UnitDef {
        code: "[degR]",
        metric: false,
        definition: Definition::Linear {
            unit: "K/9",
            value: "5",
        },
    },
    UnitDef {
        code: "[degRe]",
        metric: false,
        definition: Definition::Special { units: None },
    },
    UnitDef {
        code: "cal_[15]",
        metric: true,
        definition: Definition::Linear {
            unit: "J",
            value: "4.18580",
        },
    },
    UnitDef {
        code: "cal_[20]",
        metric: true,
        definition: Definition::Linear {
            unit: "J",
            value: "4.18190",
        },
    },
    UnitDef {
        code: "cal_m",
        metric: true,
        definition: Definition::Linear {
            unit: "J",
            value: "4.19002",
        },
    },
    UnitDef {
        code: "cal_IT",
        metric: true,
        definition: Definition::Linear {
            unit: "J",
            value: "4.1868",
        },
    },
    UnitDef {
        code: "cal_th",
        metric: true,
        definition: Definition::Linear {
            unit: "J",
            value: "4.184",
        },
    },
    UnitDef {
        code: "cal",
        metric: true,
        definition: Definition::Linear {
            unit: "cal_th",
            value: "1",
        },
    },
    UnitDef {
        code: "[Cal]",
        metric: false,
        definition: Definition::Linear {
            unit: "kcal_th",
            value: "1",
        },
    },
    UnitDef {
        code: "[Btu_39]",
        metric: false,
        definition: Definition::Linear {
            unit: "kJ",
            value: "1.05967",
        },
    },
    UnitDef {
        code: "[Btu_59]",
        metric: false,
        definition: Definition::Linear {
            unit: "kJ",
            value: "1.05480",
        },
    },
    UnitDef {
        code: "[Btu_60]",
        metric: false,
        definition: Definition::Linear {
            unit: "kJ",
            value: "1.05468",
        },
    },
    UnitDef {
        code: "[Btu_m]",
        metric: false,
        definition: Definition::Linear {
            unit: "kJ",
            value: "1.05587",
        },
    },
    UnitDef {
        code: "[Btu_IT]",
        metric: false,
        definition: Definition::Linear {
            unit: "kJ",
            value: "1.05505585262",
        },
    },
    UnitDef {
        code: "[Btu_th]",
        metric: false,
        definition: Definition::Linear {
            unit: "kJ",
            value: "1.054350",
        },
    },
    UnitDef {
        code: "[Btu]",
        metric: false,
        definition: Definition::Linear {
            unit: "[Btu_th]",
            value: "1",
        },
    },
    UnitDef {
        code: "[HP]",
        metric: false,
        definition: Definition::Linear {
            unit: "[ft_i].[lbf_av]/s",
            value: "550",
        },
    },
    UnitDef {
        code: "tex",
        metric: true,
        definition: Definition::Linear {
            unit: "g/km",
            value: "1",
        },
    },
    UnitDef {
        code: "[den]",
        metric: false,
        definition: Definition::Linear {
            unit: "g/9/km",
            value: "1",
        },
    },
    UnitDef {
        code: "m[H2O]",
        metric: true,
        definition: Definition::Linear {
            unit: "kPa",
            value: "980665e-5",
        },
    },
    UnitDef {
        code: "m[Hg]",
        metric: true,
        definition: Definition::Linear {
            unit: "kPa",
            value: "133.3220",
        },
    },
    UnitDef {
        code: "[in_i'H2O]",
        metric: false,
        definition: Definition::Linear {
            unit: "m[H2O].[in_i]/m",
            value: "1",
        },
    },
    UnitDef {
        code: "[in_i'Hg]",
        metric: false,
        definition: Definition::Linear {
            unit: "m[Hg].[in_i]/m",
            value: "1",
        },
    },
    UnitDef {
        code: "[PRU]",
        metric: false,
        definition: Definition::Linear {
            unit: "mm[Hg].s/ml",
            value: "1",
        },
    },
    UnitDef {
        code: "[wood'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "mm[Hg].min/L",
            value: "1",
        },
    },
    UnitDef {
        code: "[diop]",
        metric: false,
        definition: Definition::Linear {
            unit: "/m",
            value: "1",
        },
    },
    UnitDef {
        code: "[p'diop]",
        metric: false,
        definition: Definition::Special { units: Some("deg") },
    },
    UnitDef {
        code: "%[slope]",
        metric: false,
        definition: Definition::Special { units: Some("deg") },
    },
    UnitDef {
        code: "[mesh_i]",
        metric: false,
        definition: Definition::Linear {
            unit: "/[in_i]",
            value: "1",
        },
    },
    UnitDef {
        code: "[Ch]",
        metric: false,
        definition: Definition::Linear {
            unit: "mm/3",
            value: "1",
        },
    },
    UnitDef {
        code: "[drp]",
        metric: false,
        definition: Definition::Linear {
            unit: "ml/20",
            value: "1",
        },
    },
    UnitDef {
        code: "[hnsf'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[MET]",
        metric: false,
        definition: Definition::Linear {
            unit: "mL/min/kg",
            value: "3.5",
        },
    },
    UnitDef {
        code: "[hp'_X]",
        metric: false,
        definition: Definition::Special { units: None },
    },
    UnitDef {
        code: "[hp'_C]",
        metric: false,
        definition: Definition::Special { units: None },
    },
    UnitDef {
        code: "[hp'_M]",
        metric: false,
        definition: Definition::Special { units: None },
    },
    UnitDef {
        code: "[hp'_Q]",
        metric: false,
        definition: Definition::Special { units: None },
    },
    UnitDef {
        code: "[hp_X]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[hp_C]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[hp_M]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[hp_Q]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[kp_X]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[kp_C]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[kp_M]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[kp_Q]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "eq",
        metric: true,
        definition: Definition::Linear {
            unit: "mol",
            value: "1",
        },
    },
    UnitDef {
        code: "osm",
        metric: true,
        definition: Definition::Linear {
            unit: "mol",
            value: "1",
        },
    },
    UnitDef {
        code: "[pH]",
        metric: false,
        definition: Definition::Special {
            units: Some("mol/l"),
        },
    },
    UnitDef {
        code: "g%",
        metric: true,
        definition: Definition::Linear {
            unit: "g/dl",
            value: "1",
        },
    },
    UnitDef {
        code: "[S]",
        metric: false,
        definition: Definition::Linear {
            unit: "10*-13.s",
            value: "1",
        },
    },
    UnitDef {
        code: "[HPF]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[LPF]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "100",
        },
    },
    UnitDef {
        code: "kat",
        metric: true,
        definition: Definition::Linear {
            unit: "mol/s",
            value: "1",
        },
    },
    UnitDef {
        code: "U",
        metric: true,
        definition: Definition::Linear {
            unit: "umol/min",
            value: "1",
        },
    },
    UnitDef {
        code: "[iU]",
        metric: true,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[IU]",
        metric: true,
        definition: Definition::Linear {
            unit: "[iU]",
            value: "1",
        },
    },
    UnitDef {
        code: "[arb'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[USP'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[GPL'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[MPL'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[APL'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[beth'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[anti'Xa'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[todd'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[dye'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[smgy'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[bdsk'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[ka'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[knk'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[mclg'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[tb'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[CCID_50]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[TCID_50]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[EID_50]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[PFU]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[FFU]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[CFU]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[IR]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[BAU]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[AU]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[Amb'a'1'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[PNU]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[Lf]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[D'ag'U]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[FEU]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[ELU]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "[EU]",
        metric: false,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "Np",
        metric: true,
        definition: Definition::Special { units: Some("1") },
    },
    UnitDef {
        code: "B",
        metric: true,
        definition: Definition::Special { units: Some("1") },
    },
    UnitDef {
        code: "B[SPL]",
        metric: true,
        definition: Definition::Special {
            units: Some("10*-5.Pa"),
        },
    },
    UnitDef {
        code: "B[V]",
        metric: true,
        definition: Definition::Special { units: Some("V") },
    },
    UnitDef {
        code: "B[mV]",
        metric: true,
        definition: Definition::Special { units: Some("mV") },
    },
    UnitDef {
        code: "B[uV]",
        metric: true,
        definition: Definition::Special { units: Some("uV") },
    },
    UnitDef {
        code: "B[10.nV]",
        metric: true,
        definition: Definition::Special { units: None },
    },
    UnitDef {
        code: "B[W]",
        metric: true,
        definition: Definition::Special { units: Some("W") },
    },
    UnitDef {
        code: "B[kW]",
        metric: true,
        definition: Definition::Special { units: Some("kW") },
    },
    UnitDef {
        code: "st",
        metric: true,
        definition: Definition::Linear {
            unit: "m3",
            value: "1",
        },
    },
    UnitDef {
        code: "Ao",
        metric: false,
        definition: Definition::Linear {
            unit: "nm",
            value: "0.1",
        },
    },
    UnitDef {
        code: "b",
        metric: false,
        definition: Definition::Linear {
            unit: "fm2",
            value: "100",
        },
    },
    UnitDef {
        code: "att",
        metric: false,
        definition: Definition::Linear {
            unit: "kgf/cm2",
            value: "1",
        },
    },
    UnitDef {
        code: "mho",
        metric: true,
        definition: Definition::Linear {
            unit: "S",
            value: "1",
        },
    },
    UnitDef {
        code: "[psi]",
        metric: false,
        definition: Definition::Linear {
            unit: "[lbf_av]/[in_i]2",
            value: "1",
        },
    },
    UnitDef {
        code: "circ",
        metric: false,
        definition: Definition::Linear {
            unit: "[pi].rad",
            value: "2",
        },
    },
    UnitDef {
        code: "sph",
        metric: false,
        definition: Definition::Linear {
            unit: "[pi].sr",
            value: "4",
        },
    },
    UnitDef {
        code: "[car_m]",
        metric: false,
        definition: Definition::Linear {
            unit: "g",
            value: "2e-1",
        },
    },
    UnitDef {
        code: "[car_Au]",
        metric: false,
        definition: Definition::Linear {
            unit: "/24",
            value: "1",
        },
    },
    UnitDef {
        code: "[smoot]",
        metric: false,
        definition: Definition::Linear {
            unit: "[in_i]",
            value: "67",
        },
    },
    UnitDef {
        code: "[m/s2/Hz^(1/2)]",
        metric: false,
        definition: Definition::Special { units: None },
    },
    UnitDef {
        code: "bit_s",
        metric: false,
        definition: Definition::Special { units: Some("1") },
    },
    UnitDef {
        code: "bit",
        metric: true,
        definition: Definition::Linear {
            unit: "1",
            value: "1",
        },
    },
    UnitDef {
        code: "By",
        metric: true,
        definition: Definition::Linear {
            unit: "bit",
            value: "8",
        },
    },
    UnitDef {
        code: "Bd",
        metric: true,
        definition: Definition::Linear {
            unit: "/s",
            value: "1",
        },
    },
];
