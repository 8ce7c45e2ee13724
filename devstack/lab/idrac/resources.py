"""Redfish documents served by a simulated iDRAC, in two personalities: iDRAC9 (current
7.x firmware) and iDRAC10 (1.x firmware, PowerEdge 17G).

Shapes follow the Dell samples that ship in the `sushy` package (checked both ways by
tests/integration/test_idrac_shapes.py: every key of a sample is here unless listed as not
simulated, and nothing is here that the sample lacks unless listed as added) and the DMTF
schemas (checked by the DMTF's validators, tests/integration/test_idrac_conformance.py).
Every link a document carries is served (tests crawl them all); what the lab does not
simulate is not linked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .bmc import BMC, MANAGER_ID, SYSTEM_ID, Job

R = "/redfish/v1"
MGR = f"{R}/Managers/{MANAGER_ID}"
SYS = f"{R}/Systems/{SYSTEM_ID}"
CHS = f"{R}/Chassis/{SYSTEM_ID}"
DELL_MGR = f"{R}/Dell/Managers/{MANAGER_ID}"
ACCOUNTS = f"{R}/AccountService/Accounts"
ROLES = f"{R}/AccountService/Roles"
SUBSCRIPTIONS = f"{R}/EventService/Subscriptions"

# Dell OEM links of the system (as in Dell's sample): each answers as an empty Dell
# collection or service, enough for a client that follows them.
DELL_SYSTEM_LINKS = {
    "BootOrder": f"{SYS}/Oem/Dell/DellBootSources",
    "DellBootSources": f"{SYS}/Oem/Dell/DellBootSources",
    "DellSoftwareInstallationService": f"{SYS}/Oem/Dell/DellSoftwareInstallationService",
    "DellVideoCollection": f"{SYS}/Oem/Dell/DellVideo",
    "DellChassisCollection": f"{CHS}/Oem/Dell/DellChassis",
    "DellPresenceAndStatusSensorCollection": f"{SYS}/Oem/Dell/DellPresenceAndStatusSensors",
    "DellSensorCollection": f"{SYS}/Oem/Dell/DellSensors",
    "DellRollupStatusCollection": f"{SYS}/Oem/Dell/DellRollupStatus",
    "DellPSNumericSensorCollection": f"{SYS}/Oem/Dell/DellPSNumericSensors",
    "DellVideoNetworkCollection": f"{SYS}/Oem/Dell/DellVideoNetwork",
    "DellOSDeploymentService": f"{SYS}/Oem/Dell/DellOSDeploymentService",
    "DellMetricService": f"{SYS}/Oem/Dell/DellMetricService",
    "DellGPUSensorCollection": f"{SYS}/Oem/Dell/DellGPUSensors",
    "DellRaidService": f"{SYS}/Oem/Dell/DellRaidService",
    "DellNumericSensorCollection": f"{SYS}/Oem/Dell/DellNumericSensors",
    "DellBIOSService": f"{SYS}/Oem/Dell/DellBIOSService",
    "DellSlotCollection": f"{CHS}/Oem/Dell/DellSlots",
}


def ref(path: str) -> dict[str, str]:
    return {"@odata.id": path}


def collection(path: str, odata_type: str, name: str, members: list[str] | list[dict]) -> dict[str, Any]:
    docs = [m if isinstance(m, dict) else ref(m) for m in members]
    return {
        "@odata.context": f"{R}/$metadata#{odata_type}.{odata_type}",
        "@odata.id": path,
        "@odata.type": f"#{odata_type}.{odata_type}",
        "Description": name,
        "Name": name,
        "Members": docs,
        "Members@odata.count": len(docs),
    }


def resource(path: str, odata_type: str, ident: str, name: str, **props: Any) -> dict[str, Any]:
    """A plain resource: `odata_type` is `Namespace.vX_Y_Z`."""
    ns = odata_type.split(".", 1)[0]
    return {
        "@odata.context": f"{R}/$metadata#{ns}.{ns}",
        "@odata.id": path,
        "@odata.type": f"#{odata_type}.{ns}",
        "Id": ident,
        "Name": name,
        **props,
    }


def _status(state: str = "Enabled") -> dict[str, str]:
    return {"Health": "OK", "HealthRollup": "OK", "State": state}


def service_root(bmc: BMC) -> dict[str, Any]:
    gen10 = bmc.generation >= 10
    return {
        "@odata.context": f"{R}/$metadata#ServiceRoot.ServiceRoot",
        "@odata.id": R,
        "@odata.type": "#ServiceRoot.v1_18_0.ServiceRoot" if gen10 else "#ServiceRoot.v1_17_0.ServiceRoot",
        "AccountService": ref(f"{R}/AccountService"),
        "Chassis": ref(f"{R}/Chassis"),
        "Description": "Root Service",
        "EventService": ref(f"{R}/EventService"),
        "Id": "RootService",
        "JsonSchemas": ref(f"{R}/JsonSchemas"),
        "Links": {"Sessions": ref(f"{R}/SessionService/Sessions")},
        "Managers": ref(f"{R}/Managers"),
        "Name": "Root Service",
        "Oem": {
            "Dell": {
                "@odata.context": f"{R}/$metadata#DellServiceRoot.DellServiceRoot",
                "@odata.type": "#DellServiceRoot.v1_0_0.DellServiceRoot",
                "IsBranded": 0,
                "ManagerMACAddress": f"4c:d9:8f:00:{bmc.index // 256 % 256:02x}:{bmc.index % 256:02x}",
                "ServiceTag": bmc.service_tag,
            }
        },
        "Product": "Integrated Dell Remote Access Controller",
        "ProtocolFeaturesSupported": {
            "ExpandQuery": {
                "ExpandAll": True,
                "Levels": True,
                "Links": True,
                "MaxLevels": 1,
                "NoLinks": True,
            },
            "FilterQuery": False,
            "SelectQuery": True,
            "OnlyMemberQuery": False,
            "TopSkipQuery": True,
            "ExcerptQuery": False,
        },
        "RedfishVersion": "1.20.1" if gen10 else "1.17.0",
        "Registries": ref(f"{R}/Registries"),
        "SessionService": ref(f"{R}/SessionService"),
        "Systems": ref(f"{R}/Systems"),
        "Tasks": ref(f"{R}/TaskService"),
        "UpdateService": ref(f"{R}/UpdateService"),
        "Vendor": "Dell",
        "UUID": f"4c4c4544-0000-1000-8000-{bmc.index:012d}",
    }


def odata_service() -> dict[str, Any]:
    names = [
        "AccountService",
        "Chassis",
        "EventService",
        "JsonSchemas",
        "Managers",
        "Registries",
        "SessionService",
        "Systems",
        "Tasks",
        "UpdateService",
    ]
    paths = {"Tasks": f"{R}/TaskService"}
    return {
        "@odata.context": f"{R}/$metadata",
        "value": [
            {"name": "Service", "kind": "Singleton", "url": f"{R}/"},
            *({"name": n, "kind": "Singleton", "url": paths.get(n, f"{R}/{n}")} for n in names),
            {"name": "Sessions", "kind": "Singleton", "url": f"{R}/SessionService/Sessions"},
        ],
    }


def session_service() -> dict[str, Any]:
    return {
        "@odata.id": f"{R}/SessionService",
        "@odata.type": "#SessionService.v1_1_8.SessionService",
        "@odata.context": f"{R}/$metadata#SessionService.SessionService",
        "Id": "SessionService",
        "Name": "Session Service",
        "Description": "Session Service",
        "ServiceEnabled": True,
        "SessionTimeout": 1800,
        "Sessions": ref(f"{R}/SessionService/Sessions"),
        "Status": {"Health": "OK", "State": "Enabled"},
    }


def session_doc(sid: str, user: str) -> dict[str, Any]:
    return {
        "@odata.id": f"{R}/SessionService/Sessions/{sid}",
        "@odata.type": "#Session.v1_3_0.Session",
        "@odata.context": f"{R}/$metadata#Session.Session",
        "Id": sid,
        "Name": "User Session",
        "Description": "User Session",
        "UserName": user,
        "Password": None,
    }


# ---- system ---------------------------------------------------------------------------------------
BOOT_TARGETS = [
    "None",
    "Pxe",
    "Floppy",
    "Cd",
    "Hdd",
    "BiosSetup",
    "Utilities",
    "UefiTarget",
    "SDCard",
    "UefiHttp",
]


def boot(bmc: BMC) -> dict[str, Any]:
    b = dict(bmc.boot_override)
    b.update(
        {
            "BootOptions": ref(f"{SYS}/BootOptions"),
            "Certificates": ref(f"{SYS}/Boot/Certificates"),
            "BootOrder": ["Boot0001", "Boot0002"],
            "BootOrder@odata.count": 2,
            "UefiTargetBootSourceOverride": None,
            "BootSourceOverrideTarget@Redfish.AllowableValues": BOOT_TARGETS,
        }
    )
    return b


def dell_system(bmc: BMC) -> dict[str, Any]:
    """Oem.Dell.DellSystem with every field of Dell's sample, filled for this server."""
    return {
        "@odata.context": f"{R}/$metadata#DellSystem.DellSystem",
        "@odata.id": f"{SYS}/Oem/Dell/DellSystem/{SYSTEM_ID}",
        "@odata.type": "#DellSystem.v1_2_0.DellSystem",
        "BIOSReleaseDate": "01/01/2026",
        "BaseBoardChassisSlot": "NA",
        "BatteryRollupStatus": "OK",
        "BladeGeometry": "NotApplicable",
        "CMCIP": None,
        "CPURollupStatus": "OK",
        "ChassisModel": "",
        "ChassisName": "Main System Chassis",
        "ChassisServiceTag": bmc.service_tag,
        "ChassisSystemHeightUnit": 1,
        "CurrentRollupStatus": "OK",
        "EstimatedExhaustTemperatureCelsius": 41,
        "EstimatedSystemAirflowCFM": 30,
        "ExpressServiceCode": str(100000000 + bmc.index),
        "FanRollupStatus": "OK",
        "Id": SYSTEM_ID,
        "IDSDMRollupStatus": None,
        "IntrusionRollupStatus": "OK",
        "IsOEMBranded": "False",
        "LastSystemInventoryTime": "2026-01-01T00:00:00+00:00",
        "LastUpdateTime": "2026-01-01T00:00:00+00:00",
        "LicensingRollupStatus": "OK",
        "MaxCPUSockets": 2,
        "MaxDIMMSlots": 24,
        "MaxPCIeSlots": 3,
        "MemoryOperationMode": "OptimizerMode",
        "Name": "DellSystem",
        "NodeID": bmc.service_tag,
        "PSRollupStatus": "OK",
        "PlatformGUID": f"33325a4f-c0b8-4380-5910-{bmc.index:012d}",
        "PopulatedDIMMSlots": 12,
        "PopulatedPCIeSlots": 1,
        "PowerCapEnabledState": "Disabled",
        "SDCardRollupStatus": None,
        "SELRollupStatus": "OK",
        "ServerAllocationWatts": None,
        "StorageRollupStatus": "OK",
        "SysMemErrorMethodology": "Multi-bitECC",
        "SysMemFailOverState": "NotInUse",
        "SysMemLocation": "SystemBoardOrMotherboard",
        "SysMemPrimaryStatus": "OK",
        "SystemGeneration": "17G Monolithic" if bmc.generation >= 10 else "14G Monolithic",
        "SystemID": int(bmc.system_id, 16),
        "SystemRevision": "I",
        "TempRollupStatus": "OK",
        "TempStatisticsRollupStatus": "OK",
        "UUID": f"4c4c4544-0053-{bmc.index % 10000:04d}-8000-{bmc.index:012d}",
        "VoltRollupStatus": "OK",
        "smbiosGUID": f"44454c4c-5300-1000-8000-{bmc.index:012d}",
    }


def power_state(bmc: BMC) -> str:
    return bmc.power_state if bmc.power_state in ("On", "Off", "PoweringOn", "PoweringOff") else "On"


def system(bmc: BMC) -> dict[str, Any]:
    bios = next((c.version for c in bmc.components if c.device == "BIOS"), "")
    gen10 = bmc.generation >= 10
    doc = {
        "@odata.context": f"{R}/$metadata#ComputerSystem.ComputerSystem",
        "@odata.id": SYS,
        "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem"
        if gen10
        else "#ComputerSystem.v1_13_0.ComputerSystem",
        "Actions": {
            "#ComputerSystem.Reset": {
                "target": f"{SYS}/Actions/ComputerSystem.Reset",
                "ResetType@Redfish.AllowableValues": bmc.reset_types(),
            }
        },
        "AssetTag": "",
        "Bios": ref(f"{SYS}/Bios"),
        "BiosVersion": bios,
        "Boot": boot(bmc),
        "Description": "Computer System which represents a machine (physical or virtual) and the local "
        "resources such as memory, cpu and other devices that can be accessed from that machine.",
        "EthernetInterfaces": ref(f"{SYS}/EthernetInterfaces"),
        "HostName": f"sim{bmc.index:04d}.lab",
        "HostWatchdogTimer": {
            "FunctionEnabled": False,
            "Status": {"State": "Disabled"},
            "TimeoutAction": "None",
        },
        "HostingRoles": [],
        "HostingRoles@odata.count": 0,
        "Id": SYSTEM_ID,
        "IndicatorLED": "Off",
        "Links": {
            "Chassis": [ref(CHS)],
            "Chassis@odata.count": 1,
            "ManagedBy": [ref(MGR)],
            "ManagedBy@odata.count": 1,
            "CooledBy": [],
            "CooledBy@odata.count": 0,
            "PoweredBy": [],
            "PoweredBy@odata.count": 0,
            "Oem": {
                "Dell": {
                    "@odata.type": "#DellOem.v1_1_0.DellOemLinks",
                    **{k: ref(v) for k, v in DELL_SYSTEM_LINKS.items()},
                }
            },
        },
        "LocationIndicatorActive": bmc.location_indicator,
        "Manufacturer": "Dell Inc.",
        "Memory": ref(f"{SYS}/Memory"),
        "MemorySummary": {"MemoryMirroring": "System", "Status": _status(), "TotalSystemMemoryGiB": 384},
        "Model": bmc.model,
        "Name": "System",
        "NetworkInterfaces": ref(f"{SYS}/NetworkInterfaces"),
        "Oem": {"Dell": {"@odata.type": "#DellOem.v1_1_0.DellOemResources", "DellSystem": dell_system(bmc)}},
        "PCIeDevices": [],
        "PCIeDevices@odata.count": 0,
        "PCIeFunctions": [],
        "PCIeFunctions@odata.count": 0,
        "PartNumber": "0X0XX0A00",
        "PowerState": power_state(bmc),
        "ProcessorSummary": {
            "Count": 2,
            "LogicalProcessorCount": 48,
            "Model": "Intel(R) Xeon(R) Gold 6126",
            "Status": _status(),
        },
        "Processors": ref(f"{SYS}/Processors"),
        "SKU": bmc.service_tag,
        "SecureBoot": ref(f"{SYS}/SecureBoot"),
        "SerialNumber": f"CN7{bmc.index:09d}",
        "SimpleStorage": ref(f"{SYS}/SimpleStorage"),
        "Status": _status(),
        "Storage": ref(f"{SYS}/Storage"),
        "SystemType": "Physical",
        "TrustedModules": [],
        "TrustedModules@odata.count": 0,
        "UUID": f"4c4c4544-0053-{bmc.index % 10000:04d}-8000-{bmc.index:012d}",
    }
    if gen10:
        # iDRAC10: no SimpleStorage; virtual media under the system; the boot override is
        # written to the settings object and shown on the system.
        doc.pop("SimpleStorage")
        doc["VirtualMedia"] = ref(f"{SYS}/VirtualMedia")
        doc["@Redfish.Settings"] = {
            "@odata.type": "#Settings.v1_3_5.Settings",
            "SettingsObject": ref(f"{SYS}/Settings"),
            "SupportedApplyTimes": ["Immediate"],
        }
    return doc


def system_settings(bmc: BMC) -> dict[str, Any]:
    b = {
        k: bmc.boot_override[k]
        for k in ("BootSourceOverrideEnabled", "BootSourceOverrideMode", "BootSourceOverrideTarget")
    }
    return {
        "@odata.context": f"{R}/$metadata#ComputerSystem.ComputerSystem",
        "@odata.id": f"{SYS}/Settings",
        "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
        "Id": "Settings",
        "Name": "System settings",
        "Boot": b,
    }


def bios(bmc: BMC) -> dict[str, Any]:
    return resource(
        f"{SYS}/Bios",
        "Bios.v1_1_0",
        "Bios",
        "BIOS Configuration Current Settings",
        Description="BIOS Configuration Current Settings",
        AttributeRegistry="BiosAttributeRegistry.v1_0_0",
        Attributes=dict(bmc.attributes["BIOS.Setup.1-1"]),
    )


def boot_option(n: int) -> dict[str, Any]:
    names = {
        1: ("Integrated RAID Controller 1: Ubuntu", "HD(1,GPT,0)"),
        2: ("Embedded NIC 1 Port 1 Partition 1", "PciRoot(0x0)/Pci(0x1C,0x0)"),
    }
    name, dev = names[n]
    return resource(
        f"{SYS}/BootOptions/Boot000{n}",
        "BootOption.v1_0_4",
        f"Boot000{n}",
        "Uefi Boot Option",
        BootOptionEnabled=True,
        BootOptionReference=f"Boot000{n}",
        DisplayName=name,
        UefiDevicePath=dev,
        Description="Current settings of the UEFI Boot option",
    )


def processor(n: int) -> dict[str, Any]:
    return resource(
        f"{SYS}/Processors/CPU.Socket.{n}",
        "Processor.v1_11_0",
        f"CPU.Socket.{n}",
        "CPU",
        Manufacturer="Intel",
        Model="Intel(R) Xeon(R) Gold 6126",
        ProcessorType="CPU",
        Socket=f"CPU.Socket.{n}",
        TotalCores=12,
        TotalThreads=24,
        Status={"Health": "OK", "State": "Enabled"},
    )


def dimm(n: int) -> dict[str, Any]:
    return resource(
        f"{SYS}/Memory/DIMM.Socket.A{n}",
        "Memory.v1_11_0",
        f"DIMM.Socket.A{n}",
        "DIMM A" + str(n),
        CapacityMiB=32768,
        MemoryDeviceType="DDR4",
        Manufacturer="Hynix Semiconductor",
        OperatingSpeedMhz=2666,
        Status={"Health": "OK", "State": "Enabled"},
    )


def storage(bmc: BMC) -> dict[str, Any]:
    perc = next((c for c in bmc.components if c.device == "RAID"), None)
    return resource(
        f"{SYS}/Storage/RAID.Integrated.1-1",
        "Storage.v1_8_0",
        "RAID.Integrated.1-1",
        perc.name if perc else "RAID Controller",
        Drives=[],
        **{"Drives@odata.count": 0},
        Status={"Health": "OK", "HealthRollup": "OK", "State": "Enabled"},
    )


def system_nic(n: int, bmc: BMC) -> dict[str, Any]:
    return resource(
        f"{SYS}/EthernetInterfaces/NIC.Integrated.1-{n}-1",
        "EthernetInterface.v1_6_0",
        f"NIC.Integrated.1-{n}-1",
        "System Ethernet Interface",
        MACAddress=f"b0:26:28:00:{bmc.index % 256:02x}:{n:02x}",
        SpeedMbps=1000,
        Status={"Health": "OK", "State": "Enabled"},
        LinkStatus="LinkUp",
    )


def secure_boot() -> dict[str, Any]:
    return resource(
        f"{SYS}/SecureBoot",
        "SecureBoot.v1_1_0",
        "SecureBoot",
        "UEFI Secure Boot",
        SecureBootCurrentBoot="Disabled",
        SecureBootEnable=False,
        SecureBootMode="DeployedMode",
    )


# ---- manager ---------------------------------------------------------------------------------------
def scp_action_names(bmc: BMC) -> tuple[str, str, str]:
    """(action key prefix, export target, import target): iDRAC9 keeps the EID_674 targets,
    iDRAC10 renames them to OemManager.*."""
    if bmc.generation >= 10:
        return (
            "#OemManager",
            f"{MGR}/Actions/Oem/OemManager.ExportSystemConfiguration",
            f"{MGR}/Actions/Oem/OemManager.ImportSystemConfiguration",
        )
    return (
        "OemManager.v1_0_0#OemManager",
        f"{MGR}/Actions/Oem/EID_674_Manager.ExportSystemConfiguration",
        f"{MGR}/Actions/Oem/EID_674_Manager.ImportSystemConfiguration",
    )


def manager(bmc: BMC) -> dict[str, Any]:
    gen10 = bmc.generation >= 10
    share = {
        "IgnoreCertificateWarning@Redfish.AllowableValues": ["Disabled", "Enabled"],
        "ProxySupport@Redfish.AllowableValues": ["Disabled", "EnabledProxyDefault", "Enabled"],
        "ProxyType@Redfish.AllowableValues": ["HTTP", "SOCKS4"],
        "ShareType@Redfish.AllowableValues": ["LOCAL", "NFS", "CIFS", "HTTP", "HTTPS"],
        "Target@Redfish.AllowableValues": ["ALL", "IDRAC", "BIOS", "NIC", "RAID"],
    }
    dell_links = {
        "DellAttributes": [ref(f"{MGR}/Attributes")],
        "DellAttributes@odata.count": 1,
        "DellJobService": ref(f"{DELL_MGR}/DellJobService"),
        "DellLCService": ref(f"{DELL_MGR}/DellLCService"),
        "DelliDRACCardService": ref(f"{DELL_MGR}/DelliDRACCardService"),
        "Jobs": ref(f"{MGR}/Jobs"),
    }
    key, export_target, import_target = scp_action_names(bmc)
    doc = {
        "@odata.context": f"{R}/$metadata#Manager.Manager",
        "@odata.id": MGR,
        "@odata.type": "#Manager.v1_19_0.Manager" if gen10 else "#Manager.v1_9_0.Manager",
        "Actions": {
            "#Manager.Reset": {
                "ResetType@Redfish.AllowableValues": ["GracefulRestart"],
                "target": f"{MGR}/Actions/Manager.Reset",
            },
            "Oem": {
                f"{key}.ExportSystemConfiguration": {
                    "ExportFormat@Redfish.AllowableValues": ["XML", "JSON"],
                    "ExportUse@Redfish.AllowableValues": ["Default", "Clone", "Replace"],
                    "IncludeInExport@Redfish.AllowableValues": [
                        "Default",
                        "IncludeReadOnly",
                        "IncludePasswordHashValues",
                    ],
                    "ShareParameters": share,
                    "target": export_target,
                },
                f"{key}.ImportSystemConfiguration": {
                    "HostPowerState@Redfish.AllowableValues": ["On", "Off"],
                    "ImportSystemConfiguration@Redfish.AllowableValues": ["TimeToWait", "ImportBuffer"],
                    "ShareParameters": share,
                    "ShutdownType@Redfish.AllowableValues": ["Graceful", "Forced", "NoReboot"],
                    "target": import_target,
                },
            },
        },
        "CommandShell": {
            "ConnectTypesSupported": ["SSH", "IPMI"],
            "ConnectTypesSupported@odata.count": 2,
            "MaxConcurrentSessions": 5,
            "ServiceEnabled": True,
        },
        "DateTime": "2026-01-01T00:00:00+00:00",
        "DateTimeLocalOffset": "+00:00",
        "Description": "BMC",
        "EthernetInterfaces": ref(f"{MGR}/EthernetInterfaces"),
        "FirmwareVersion": bmc.idrac_version(),
        "GraphicalConsole": {
            "ConnectTypesSupported": ["KVMIP"],
            "ConnectTypesSupported@odata.count": 1,
            "MaxConcurrentSessions": 6,
            "ServiceEnabled": True,
        },
        "HostInterfaces": ref(f"{MGR}/HostInterfaces"),
        "Id": MANAGER_ID,
        "Links": {
            "ManagerForChassis": [ref(CHS)],
            "ManagerForChassis@odata.count": 1,
            "ManagerForServers": [ref(SYS)],
            "ManagerForServers@odata.count": 1,
            "ManagerInChassis": ref(CHS),
            "Oem": {"Dell": dell_links},
        },
        "LogServices": ref(f"{MGR}/LogServices"),
        "ManagerType": "BMC",
        "Model": "17G Monolithic" if gen10 else "14G Monolithic",
        "Name": "Manager",
        "NetworkProtocol": ref(f"{MGR}/NetworkProtocol"),
        "Oem": {
            "Dell": {
                "DelliDRACCard": {
                    "@odata.id": f"{DELL_MGR}/DelliDRACCard/iDRAC.Embedded.1-1_0x23_IDRACinfo",
                    "@odata.type": "#DelliDRACCard.v1_1_0.DelliDRACCard",
                    "IPMIVersion": "2.0",
                    "URLString": f"https://{bmc.host}:443",
                }
            }
        },
        "PowerState": "On",
        "Redundancy": [],
        "Redundancy@odata.count": 0,
        "SerialConsole": {
            "ConnectTypesSupported": [],
            "ConnectTypesSupported@odata.count": 0,
            "MaxConcurrentSessions": 0,
            "ServiceEnabled": False,
        },
        "SerialInterfaces": ref(f"{MGR}/SerialInterfaces"),
        "Status": {"Health": "OK", "State": "Enabled"},
        "UUID": f"3256444f-c0c7-3780-5310-{bmc.index:012d}",
        "VirtualMedia": ref(f"{MGR}/VirtualMedia"),
    }
    if gen10:
        doc.pop("VirtualMedia")  # iDRAC10: virtual media hangs off the system
    return doc


def idrac_card(bmc: BMC) -> dict[str, Any]:
    path = f"{DELL_MGR}/DelliDRACCard/iDRAC.Embedded.1-1_0x23_IDRACinfo"
    return {
        "@odata.context": f"{R}/$metadata#DelliDRACCard.DelliDRACCard",
        "@odata.id": path,
        "@odata.type": "#DelliDRACCard.v1_1_0.DelliDRACCard",
        "Id": "iDRAC.Embedded.1-1_0x23_IDRACinfo",
        "Name": "DelliDRACCard",
        "Description": "An instance of DelliDRACCard will have data specific to "
        "the Integrated Dell Remote Access Controller (iDRAC) in the managed system.",
        "FirmwareVersion": bmc.idrac_version(),
        "IPMIVersion": "2.0",
        "URLString": f"https://{bmc.host}:443",
        "LastSystemInventoryTime": "2026-01-01T00:00:00+00:00",
        "LastUpdateTime": "2026-01-01T00:00:00+00:00",
    }


def manager_attributes(bmc: BMC) -> dict[str, Any]:
    return {
        "@odata.context": f"{R}/$metadata#DellAttributes.DellAttributes",
        "@odata.id": f"{MGR}/Attributes",
        "@odata.type": "#DellAttributes.v1_0_0.DellAttributes",
        "Id": "iDRACAttributes",
        "Name": "OEMAttributeRegistry",
        "Description": "This schema provides the oem attributes",
        "AttributeRegistry": "ManagerAttributeRegistry.v1_0_0",
        "Attributes": {k.replace("#", "."): v for k, v in bmc.attributes["iDRAC.Embedded.1"].items()},
    }


def network_protocol(bmc: BMC) -> dict[str, Any]:
    return resource(
        f"{MGR}/NetworkProtocol",
        "ManagerNetworkProtocol.v1_5_0",
        "NetworkProtocol",
        "Manager Network Protocol",
        Description="Manager Network Service",
        HostName=f"idrac-sim{bmc.index:04d}",
        FQDN=f"idrac-sim{bmc.index:04d}.lab",
        HTTP={"Port": 80, "ProtocolEnabled": True},
        HTTPS={"Port": 443, "ProtocolEnabled": True},
        IPMI={"Port": 623, "ProtocolEnabled": False},
        SSH={"Port": 22, "ProtocolEnabled": True},
        Status={"Health": "OK", "State": "Enabled"},
    )


def manager_nic(bmc: BMC) -> dict[str, Any]:
    return resource(
        f"{MGR}/EthernetInterfaces/NIC.1",
        "EthernetInterface.v1_6_0",
        "NIC.1",
        "Manager Ethernet Interface",
        HostName=f"idrac-sim{bmc.index:04d}",
        MACAddress=f"4c:d9:8f:00:{bmc.index // 256 % 256:02x}:{bmc.index % 256:02x}",
        SpeedMbps=1000,
        Status={"Health": "OK", "State": "Enabled"},
    )


def log_service(kind: str) -> dict[str, Any]:
    base = f"{MGR}/LogServices/{kind}"
    name = "Lifecycle Controller Log Service" if kind == "Lclog" else "SEL Log Service"
    return resource(
        base,
        "LogService.v1_1_3",
        kind,
        name,
        Description=name,
        Entries=ref(f"{base}/Entries"),
        MaxNumberOfRecords=1024 if kind == "Sel" else 0,
        OverWritePolicy="WrapsWhenFull",
        ServiceEnabled=True,
        Status={"Health": "OK", "State": "Enabled"},
    )


def host_interface(bmc: BMC) -> dict[str, Any]:
    return resource(
        f"{MGR}/HostInterfaces/Host.1",
        "HostInterface.v1_2_0",
        "Host.1",
        "Managed Host Interface 1",
        HostInterfaceType="NetworkHostInterface",
        InterfaceEnabled=False,
        Status={"State": "Disabled"},
    )


# ---- chassis -------------------------------------------------------------------------------------
def chassis(bmc: BMC) -> dict[str, Any]:
    return {
        "@odata.context": f"{R}/$metadata#Chassis.Chassis",
        "@odata.id": CHS,
        "@odata.type": "#Chassis.v1_11_0.Chassis",
        "Id": SYSTEM_ID,
        "Name": "Computer System Chassis",
        "ChassisType": "RackMount",
        "Manufacturer": "Dell Inc.",
        "Model": bmc.model,
        "SerialNumber": f"CN7{bmc.index:09d}",
        "SKU": bmc.service_tag,
        "PowerState": "On" if bmc.power_state == "On" else "Off",
        "Status": {"Health": "OK", "HealthRollup": "OK", "State": "Enabled"},
        "Links": {
            "ComputerSystems": [ref(SYS)],
            "ComputerSystems@odata.count": 1,
            "ManagedBy": [ref(MGR)],
            "ManagedBy@odata.count": 1,
        },
    }


# ---- accounts --------------------------------------------------------------------------------------
def account_service(bmc: BMC) -> dict[str, Any]:
    return resource(
        f"{R}/AccountService",
        "AccountService.v1_10_0",
        "AccountService",
        "Account Service",
        Description="BMC User Accounts",
        Accounts=ref(ACCOUNTS),
        Roles=ref(ROLES),
        AccountLockoutCounterResetAfter=0,
        AccountLockoutDuration=0,
        AccountLockoutThreshold=0,
        AuthFailureLoggingThreshold=2,
        LocalAccountAuth="Enabled",
        MaxPasswordLength=40,
        MinPasswordLength=4,
        ServiceEnabled=True,
        Status={"Health": "OK", "State": "Enabled"},
    )


def account(a: dict[str, Any]) -> dict[str, Any]:
    return resource(
        f"{ACCOUNTS}/{a['Id']}",
        "ManagerAccount.v1_7_0",
        a["Id"],
        "User Account",
        Description="User Account",
        AccountTypes=[
            "Redfish",
            "SNMP",
            "OEM",
            "HostConsole",
            "ManagerConsole",
            "IPMI",
            "KVMIP",
            "VirtualMedia",
            "WebUI",
        ],
        Enabled=a["Enabled"],
        Locked=a["Locked"],
        Password=None,
        PasswordChangeRequired=False,
        RoleId=a["RoleId"],
        UserName=a["UserName"],
        Links={"Role": ref(f"{ROLES}/{a['RoleId']}")},
    )


ROLE_PRIVILEGES = {
    "Administrator": ["Login", "ConfigureManager", "ConfigureUsers", "ConfigureSelf", "ConfigureComponents"],
    "Operator": ["Login", "ConfigureSelf", "ConfigureComponents"],
    "ReadOnly": ["Login", "ConfigureSelf"],
    "None": [],
}


def role(name: str) -> dict[str, Any]:
    return resource(
        f"{ROLES}/{name}",
        "Role.v1_2_4",
        name,
        "User Role",
        Description=f"{name} User Role",
        AssignedPrivileges=ROLE_PRIVILEGES[name],
        IsPredefined=True,
        OemPrivileges=[],
        RoleId=name,
    )


# ---- events, registries, schemas ------------------------------------------------------------------------
def event_service() -> dict[str, Any]:
    return resource(
        f"{R}/EventService",
        "EventService.v1_7_0",
        "EventService",
        "Event Service",
        Description="Event Service represents the properties for the service",
        DeliveryRetryAttempts=3,
        DeliveryRetryIntervalSeconds=5,
        ServiceEnabled=True,
        EventFormatTypes=["Event", "MetricReport"],
        RegistryPrefixes=["IDRAC"],
        Subscriptions=ref(f"{R}/EventService/Subscriptions"),
        Status={"Health": "OK", "State": "Enabled"},
    )


def subscription(sub: dict[str, Any]) -> dict[str, Any]:
    return resource(
        f"{SUBSCRIPTIONS}/{sub['Id']}",
        "EventDestination.v1_9_0",
        sub["Id"],
        "EventSubscription",
        Description="Event Subscription Details",
        Destination=sub["Destination"],
        Context=sub["Context"],
        Protocol=sub["Protocol"],
        EventFormatType=sub["EventFormatType"],
        SubscriptionType="RedfishEvent",
    )


# ---- virtual media ------------------------------------------------------------------------------------
def media_base(bmc: BMC) -> str:
    return f"{SYS}/VirtualMedia" if bmc.generation >= 10 else f"{MGR}/VirtualMedia"


def virtual_media(bmc: BMC, slot: str) -> dict[str, Any]:
    vm = bmc.virtual_media[slot]
    base = f"{media_base(bmc)}/{slot}"
    image = vm["Image"]
    cd = "CD" in vm["MediaTypes"]
    return {
        "@odata.context": f"{R}/$metadata#VirtualMedia.VirtualMedia",
        "@odata.id": base,
        "@odata.type": "#VirtualMedia.v1_3_0.VirtualMedia",
        "Id": slot,
        "Name": "Virtual CD" if cd else "Virtual Removable Disk",
        "Actions": {
            "#VirtualMedia.EjectMedia": {"target": f"{base}/Actions/VirtualMedia.EjectMedia"},
            "#VirtualMedia.InsertMedia": {"target": f"{base}/Actions/VirtualMedia.InsertMedia"},
        },
        "ConnectedVia": "URI" if vm["Inserted"] else "NotConnected",
        "Image": image,
        "ImageName": image.rsplit("/", 1)[-1] if image else None,
        "Inserted": vm["Inserted"],
        "MediaTypes": vm["MediaTypes"],
        "MediaTypes@odata.count": len(vm["MediaTypes"]),
        "WriteProtected": vm["WriteProtected"],
        "TransferProtocolType": None,
    }


# ---- update service -------------------------------------------------------------------------------------
MULTIPART_PUSH = f"{R}/UpdateService/MultipartUpload"


def update_service(bmc: BMC) -> dict[str, Any]:
    doc = {
        "@odata.context": f"{R}/$metadata#UpdateService.UpdateService",
        "@odata.id": f"{R}/UpdateService",
        "@odata.type": "#UpdateService.v1_8_0.UpdateService",
        "Id": "UpdateService",
        "Name": "Update Service",
        "Description": "Represents the properties for the Update Service",
        "ServiceEnabled": True,
        "HttpPushUri": f"{R}/UpdateService/FirmwareInventory",
        "Status": {"Health": "OK", "State": "Enabled"},
        "FirmwareInventory": ref(f"{R}/UpdateService/FirmwareInventory"),
        "Actions": {
            "#UpdateService.SimpleUpdate": {
                "target": f"{R}/UpdateService/Actions/UpdateService.SimpleUpdate",
                "TransferProtocol@Redfish.AllowableValues": ["HTTP", "NFS", "CIFS", "TFTP", "HTTPS", "FTP"],
            }
        },
    }
    if bmc.multipart_push:
        # iDRAC9 from firmware 4.40, and iDRAC10, take a package pushed as multipart/form-data
        doc["MultipartHttpPushUri"] = MULTIPART_PUSH
    if bmc.generation >= 10:
        # iDRAC10: no HttpPushUri; packages come by ImageURI or multipart upload, and
        # PLDM devices are named in Targets
        doc.pop("HttpPushUri")
        doc["@odata.type"] = "#UpdateService.v1_11_0.UpdateService"
        doc["Actions"]["#UpdateService.SimpleUpdate"]["@Redfish.OperationApplyTimeSupport"] = {
            "@odata.type": "#Settings.v1_3_5.OperationApplyTimeSupport",
            "SupportedValues": ["Immediate", "OnReset"],
        }
    return doc


def fw_id(c) -> str:
    return f"Installed-{c.component_id}-{c.version}"


def firmware(bmc: BMC, c) -> dict[str, Any]:
    return {
        "@odata.context": f"{R}/$metadata#SoftwareInventory.SoftwareInventory",
        "@odata.id": f"{R}/UpdateService/FirmwareInventory/{fw_id(c)}",
        "@odata.type": "#SoftwareInventory.v1_5_0.SoftwareInventory",
        "Id": fw_id(c),
        "Name": c.name,
        "Description": "Represents Firmware Inventory",
        "SoftwareId": c.component_id,
        "Version": c.version,
        "Updateable": True,
        "ReleaseDate": "2026-01-01T00:00:00Z",
        "Status": {"Health": "OK", "State": "Enabled"},
        "Oem": {
            "Dell": {
                "DellSoftwareInventory": {
                    "ComponentID": c.component_id,
                    "ComponentType": "BIOS" if c.device == "BIOS" else "FRMW",
                }
            }
        },
    }


# ---- jobs and tasks ----------------------------------------------------------------------------------------
def job(j: Job) -> dict[str, Any]:
    # Dell's job samples carry bare message ids (PR19, JCP001); tasks carry them prefixed.
    return {
        "@odata.context": f"{R}/$metadata#DellJob.DellJob",
        "@odata.id": f"{MGR}/Jobs/{j.id}",
        "@odata.type": "#DellJob.v1_0_2.DellJob",
        "CompletionTime": j.completion_time,
        "Description": "Job Instance",
        "EndTime": "TIME_NA",
        "Id": j.id,
        "JobState": j.state,
        "JobType": j.job_type,
        "Message": j.message,
        "MessageArgs": [],
        "MessageArgs@odata.count": 0,
        "MessageId": j.message_id.rsplit(".", 1)[-1],
        "Name": j.name,
        "PercentComplete": j.percent,
        "StartTime": j.start_time,
        "TargetSettingsURI": None,
    }


_TASK_STATE = {
    "New": "New",
    "Downloading": "Running",
    "Downloaded": "Running",
    "Scheduled": "Starting",
    "Running": "Running",
    "Completed": "Completed",
    "Failed": "Exception",
    "CompletedWithErrors": "Completed",
}


def task(j: Job) -> dict[str, Any]:
    mid = j.message_id if "." in j.message_id else f"IDRAC.2.8.{j.message_id}"
    dell = {
        "@odata.type": "#DellJob.v1_1_0.DellJob",
        "CompletionTime": j.completion_time,
        "Description": "Job Instance",
        "EndTime": "TIME_NA",
        "Id": j.id,
        "JobState": j.state,
        "JobType": j.job_type,
        "Message": j.message,
        "MessageArgs": [],
        "MessageId": mid,
        "Name": j.name,
        "PercentComplete": j.percent,
        "StartTime": j.start_time,
        "TargetSettingsURI": None,
    }
    return {
        "@odata.context": f"{R}/$metadata#Task.Task",
        "@odata.id": f"{R}/TaskService/Tasks/{j.id}",
        "@odata.type": "#Task.v1_4_3.Task",
        "Description": "Server Configuration and other Tasks running on iDRAC are listed here",
        "Id": j.id,
        "Messages": [
            {"Message": j.message, "MessageArgs": [], "MessageArgs@odata.count": 0, "MessageId": mid}
        ],
        "Messages@odata.count": 1,
        "Name": j.name,
        "Oem": {"Dell": dell},
        "PercentComplete": j.percent,
        "TaskState": _TASK_STATE.get(j.state, "Running"),
        "TaskStatus": "Critical" if j.state == "Failed" else "OK",
    }


def task_service() -> dict[str, Any]:
    return {
        "@odata.context": f"{R}/$metadata#TaskService.TaskService",
        "@odata.id": f"{R}/TaskService",
        "@odata.type": "#TaskService.v1_1_4.TaskService",
        "Id": "TaskService",
        "Name": "Task Service",
        "Description": "Task Service",
        "CompletedTaskOverWritePolicy": "Oldest",
        "DateTime": "2026-01-01T00:00:00+00:00",
        "LifeCycleEventOnTaskStateChange": True,
        "ServiceEnabled": True,
        "Status": {"Health": "OK", "State": "Enabled"},
        "Tasks": ref(f"{R}/TaskService/Tasks"),
    }


# ---- Dell services -----------------------------------------------------------------------------------
def dell_service(
    name: str, odata_type: str, actions: dict[str, dict], description: str, ident: str | None = None
) -> dict[str, Any]:
    return {
        "@odata.context": f"{R}/$metadata#{odata_type}.{odata_type}",
        "@odata.id": f"{DELL_MGR}/{name}",
        "@odata.type": f"#{odata_type}.v1_1_0.{odata_type}",
        "Actions": actions,
        "Description": description,
        "Id": ident or name,
        "Name": name,
    }


def job_service() -> dict[str, Any]:
    return dell_service(
        "DellJobService",
        "DellJobService",
        {
            "#DellJobService.DeleteJobQueue": {
                "target": f"{DELL_MGR}/DellJobService/Actions/DellJobService.DeleteJobQueue"
            }
        },
        "The DellJobService resource provides some actions to support Job management functionality.",
        "Job Service",
    )


def lc_service() -> dict[str, Any]:
    return dell_service(
        "DellLCService",
        "DellLCService",
        {
            "#DellLCService.GetRemoteServicesAPIStatus": {
                "target": f"{DELL_MGR}/DellLCService/Actions/DellLCService.GetRemoteServicesAPIStatus"
            }
        },
        "The DellLCService resource provides some actions to support Lifecycle Controller functionality.",
    )


def idrac_card_service() -> dict[str, Any]:
    return dell_service(
        "DelliDRACCardService",
        "DelliDRACCardService",
        {
            "#DelliDRACCardService.iDRACReset": {
                "Force@Redfish.AllowableValues": ["Graceful", "Force"],
                "target": f"{DELL_MGR}/DelliDRACCardService/Actions/DelliDRACCardService.iDRACReset",
            }
        },
        "The DelliDRACCardService resource provides some actions to support iDRAC configurations.",
    )


def dell_stub(path: str) -> dict[str, Any]:
    """The Dell OEM resources linked from the system that rackpilot never uses: an empty
    collection or a service without actions, so that following the link works."""
    name = path.rsplit("/", 1)[-1]
    if name.endswith("Service"):
        return {
            "@odata.context": f"{R}/$metadata#{name}.{name}",
            "@odata.id": path,
            "@odata.type": f"#{name}.v1_0_0.{name}",
            "Id": name,
            "Name": name,
            "Actions": {},
            "Description": f"{name} (not simulated)",
        }
    ctype = f"{name}Collection" if name.startswith("Dell") else f"Dell{name}Collection"
    return collection(path, ctype, name, [])


def static_documents(bmc: BMC) -> dict[str, Callable[[], dict[str, Any]]]:
    """Every fixed path this BMC serves (the dynamic ones, sessions, jobs, tasks and
    firmware inventory, are routed in server.py)."""
    gen10 = bmc.generation >= 10
    lcol = f"{MGR}/LogServices"
    docs: dict[str, Callable[[], dict[str, Any]]] = {
        f"{R}/Systems": lambda: collection(
            f"{R}/Systems", "ComputerSystemCollection", "Computer System Collection", [SYS]
        ),
        SYS: lambda: system(bmc),
        f"{SYS}/Bios": lambda: bios(bmc),
        f"{SYS}/Oem/Dell/DellSystem/{SYSTEM_ID}": lambda: dell_system(bmc),
        f"{SYS}/BootOptions": lambda: collection(
            f"{SYS}/BootOptions",
            "BootOptionCollection",
            "Boot Options",
            [f"{SYS}/BootOptions/Boot0001", f"{SYS}/BootOptions/Boot0002"],
        ),
        f"{SYS}/BootOptions/Boot0001": lambda: boot_option(1),
        f"{SYS}/BootOptions/Boot0002": lambda: boot_option(2),
        f"{SYS}/Boot/Certificates": lambda: collection(
            f"{SYS}/Boot/Certificates", "CertificateCollection", "Boot Certificates", []
        ),
        f"{SYS}/Processors": lambda: collection(
            f"{SYS}/Processors",
            "ProcessorCollection",
            "Processors Collection",
            [f"{SYS}/Processors/CPU.Socket.{n}" for n in (1, 2)],
        ),
        f"{SYS}/Processors/CPU.Socket.1": lambda: processor(1),
        f"{SYS}/Processors/CPU.Socket.2": lambda: processor(2),
        f"{SYS}/Memory": lambda: collection(
            f"{SYS}/Memory",
            "MemoryCollection",
            "Memory Devices Collection",
            [f"{SYS}/Memory/DIMM.Socket.A{n}" for n in (1, 2)],
        ),
        f"{SYS}/Memory/DIMM.Socket.A1": lambda: dimm(1),
        f"{SYS}/Memory/DIMM.Socket.A2": lambda: dimm(2),
        f"{SYS}/Storage": lambda: collection(
            f"{SYS}/Storage",
            "StorageCollection",
            "Storage Collection",
            [f"{SYS}/Storage/RAID.Integrated.1-1"],
        ),
        f"{SYS}/Storage/RAID.Integrated.1-1": lambda: storage(bmc),
        f"{SYS}/SecureBoot": secure_boot,
        f"{SYS}/EthernetInterfaces": lambda: collection(
            f"{SYS}/EthernetInterfaces",
            "EthernetInterfaceCollection",
            "System Ethernet Interface Collection",
            [f"{SYS}/EthernetInterfaces/NIC.Integrated.1-{n}-1" for n in (1, 2)],
        ),
        f"{SYS}/EthernetInterfaces/NIC.Integrated.1-1-1": lambda: system_nic(1, bmc),
        f"{SYS}/EthernetInterfaces/NIC.Integrated.1-2-1": lambda: system_nic(2, bmc),
        f"{SYS}/NetworkInterfaces": lambda: collection(
            f"{SYS}/NetworkInterfaces", "NetworkInterfaceCollection", "Network Interface Collection", []
        ),
        f"{R}/Chassis": lambda: collection(f"{R}/Chassis", "ChassisCollection", "Chassis Collection", [CHS]),
        CHS: lambda: chassis(bmc),
        f"{R}/Managers": lambda: collection(f"{R}/Managers", "ManagerCollection", "BMC", [MGR]),
        MGR: lambda: manager(bmc),
        f"{MGR}/Attributes": lambda: manager_attributes(bmc),
        f"{MGR}/NetworkProtocol": lambda: network_protocol(bmc),
        f"{MGR}/EthernetInterfaces": lambda: collection(
            f"{MGR}/EthernetInterfaces",
            "EthernetInterfaceCollection",
            "Manager Ethernet Interface Collection",
            [f"{MGR}/EthernetInterfaces/NIC.1"],
        ),
        f"{MGR}/EthernetInterfaces/NIC.1": lambda: manager_nic(bmc),
        f"{MGR}/HostInterfaces": lambda: collection(
            f"{MGR}/HostInterfaces",
            "HostInterfaceCollection",
            "Host Interface Collection",
            [f"{MGR}/HostInterfaces/Host.1"],
        ),
        f"{MGR}/HostInterfaces/Host.1": lambda: host_interface(bmc),
        f"{MGR}/SerialInterfaces": lambda: collection(
            f"{MGR}/SerialInterfaces", "SerialInterfaceCollection", "Serial Interface Collection", []
        ),
        lcol: lambda: collection(
            lcol, "LogServiceCollection", "Log Service Collection", [f"{lcol}/Lclog", f"{lcol}/Sel"]
        ),
        f"{lcol}/Lclog": lambda: log_service("Lclog"),
        f"{lcol}/Sel": lambda: log_service("Sel"),
        f"{lcol}/Lclog/Entries": lambda: collection(
            f"{lcol}/Lclog/Entries", "LogEntryCollection", "Log Entry Collection", []
        ),
        f"{lcol}/Sel/Entries": lambda: collection(
            f"{lcol}/Sel/Entries", "LogEntryCollection", "Log Entry Collection", []
        ),
        f"{DELL_MGR}/DellJobService": job_service,
        f"{DELL_MGR}/DellLCService": lc_service,
        f"{DELL_MGR}/DelliDRACCardService": idrac_card_service,
        f"{DELL_MGR}/DelliDRACCard/iDRAC.Embedded.1-1_0x23_IDRACinfo": lambda: idrac_card(bmc),
        f"{R}/AccountService": lambda: account_service(bmc),
        ACCOUNTS: lambda: collection(
            ACCOUNTS,
            "ManagerAccountCollection",
            "Accounts Collection",
            [f"{ACCOUNTS}/{a['Id']}" for a in bmc.accounts],
        ),
        ROLES: lambda: collection(
            ROLES, "RoleCollection", "Roles Collection", [f"{ROLES}/{r}" for r in ROLE_PRIVILEGES]
        ),
        f"{R}/EventService": event_service,
        f"{R}/Registries": lambda: collection(
            f"{R}/Registries", "MessageRegistryFileCollection", "Registry File Collection", []
        ),
        f"{R}/JsonSchemas": lambda: collection(
            f"{R}/JsonSchemas", "JsonSchemaFileCollection", "JSON Schema File Collection", []
        ),
        f"{R}/SessionService": session_service,
        f"{R}/TaskService": task_service,
        f"{R}/UpdateService": lambda: update_service(bmc),
    }
    for r in ROLE_PRIVILEGES:
        docs[f"{ROLES}/{r}"] = lambda r=r: role(r)
    for a in bmc.accounts:
        docs[f"{ACCOUNTS}/{a['Id']}"] = lambda a=a: account(a)
    for p in DELL_SYSTEM_LINKS.values():
        docs.setdefault(p, (lambda p=p: dell_stub(p)))
    mb = media_base(bmc)
    docs[mb] = lambda: collection(
        mb, "VirtualMediaCollection", "Virtual Media Services", [f"{mb}/{s}" for s in bmc.virtual_media]
    )
    for slot in bmc.virtual_media:
        docs[f"{mb}/{slot}"] = lambda slot=slot: virtual_media(bmc, slot)
    if gen10:
        docs[f"{SYS}/Settings"] = lambda: system_settings(bmc)
    else:
        docs[f"{SYS}/SimpleStorage"] = lambda: collection(
            f"{SYS}/SimpleStorage", "SimpleStorageCollection", "Simple Storage Collection", []
        )
    from . import health  # hardware health (PSU, thermal, storage, memory, logs), fault-injectable

    docs.update(health.documents(bmc))
    return docs
